import { readFile } from 'node:fs/promises';
import { findDebianMirror, parseOsReleaseCodename, readAptSources } from './apt-sources.js';

export interface DebianMirror {
  uri: string;
  /** The apt sources file that listed the mirror. */
  file: string;
}

/**
 * Finds the Debian mirror the host's apt already uses for `suite` (or, failing that, for
 * the host's own release), so that hearth contacts no server the host does not already use.
 */
export async function discoverDebianMirror(suite: string): Promise<DebianMirror> {
  const sources = await readAptSources();
  const osRelease = await readFile('/etc/os-release', 'utf8').catch(() => '');
  const hostCodename = parseOsReleaseCodename(osRelease);
  const suites = hostCodename === undefined || hostCodename === suite ? [suite] : [suite, hostCodename];

  const mirror = findDebianMirror(sources, suites);
  if (mirror === undefined) {
    throw new Error(
      `No apt source on this host lists suite ${suites.join(' or ')} with component main ` +
        `over http, https, ftp or file, so there is no Debian mirror to run debootstrap ` +
        `against. Add one to /etc/apt/sources.list.d/ (for example a "deb URI ${suite} main" ` +
        `line for your Debian mirror) and run setup again.`,
    );
  }
  return { uri: mirror.uri, file: mirror.file };
}
