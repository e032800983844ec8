import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** One (type, URI, suite) combination from an apt sources file. */
export interface AptSource {
  /** "deb" or "deb-src". */
  type: string;
  uri: string;
  suite: string;
  components: string[];
  /** Options such as signed-by, with keys in lower case. */
  options: Record<string, string>;
  /** The file the entry came from, for messages. */
  file: string;
}

/** URI schemes that debootstrap can fetch from. */
const DEBOOTSTRAP_SCHEMES = ['http:', 'https:', 'ftp:', 'file:'];

/**
 * Parses the one-line format of sources.list: `deb [opt=value ...] URI SUITE [COMPONENT...]`.
 * A `#` starts a comment anywhere on a line.
 */
export function parseOneLineSources(text: string, file: string): AptSource[] {
  const sources: AptSource[] = [];
  for (const rawLine of text.split('\n')) {
    const line = stripComment(rawLine).trim();
    if (line === '') {
      continue;
    }
    const [type = '', ...rest] = line.split(/\s+/);
    let remainder = rest.join(' ');
    const options: Record<string, string> = {};
    if (remainder.startsWith('[')) {
      const end = remainder.indexOf(']');
      if (end === -1) {
        continue;
      }
      for (const option of remainder.slice(1, end).trim().split(/\s+/)) {
        const [key = '', value = ''] = splitOnce(option, '=');
        if (key !== '') {
          options[key.toLowerCase()] = value;
        }
      }
      remainder = remainder.slice(end + 1);
    }
    const [uri, suite, ...components] = remainder.trim().split(/\s+/);
    if (uri === undefined || uri === '' || suite === undefined) {
      continue;
    }
    sources.push({ type, uri, suite, components, options, file });
  }
  return sources;
}

/**
 * Parses the deb822 format of *.sources files: stanzas of `Field: value` lines separated
 * by blank lines, where a line starting with whitespace continues the previous field.
 * Each stanza yields one entry per type, URI and suite. Stanzas with `Enabled: no` are skipped.
 */
export function parseDeb822Sources(text: string, file: string): AptSource[] {
  const sources: AptSource[] = [];
  for (const stanza of readStanzas(text)) {
    if ((stanza.get('enabled') ?? 'yes').toLowerCase() === 'no') {
      continue;
    }
    const words = (field: string): string[] => (stanza.get(field) ?? '').split(/\s+/).filter(Boolean);
    const options: Record<string, string> = {};
    for (const [field, value] of stanza) {
      if (!['types', 'uris', 'suites', 'components', 'enabled'].includes(field)) {
        options[field] = value;
      }
    }
    for (const type of words('types')) {
      for (const uri of words('uris')) {
        for (const suite of words('suites')) {
          sources.push({ type, uri, suite, components: words('components'), options, file });
        }
      }
    }
  }
  return sources;
}

/**
 * Reads the host's apt sources in the order apt reads them: /etc/apt/sources.list, then
 * the *.list and *.sources files of sources.list.d in alphabetical order. Missing files
 * and directories count as empty.
 */
export async function readAptSources(aptDir = '/etc/apt'): Promise<AptSource[]> {
  const sources = parseOneLineSources(await readIfPresent(join(aptDir, 'sources.list')), join(aptDir, 'sources.list'));
  const partsDir = join(aptDir, 'sources.list.d');
  let names: string[] = [];
  try {
    names = (await readdir(partsDir)).sort();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw error;
    }
  }
  for (const name of names) {
    const path = join(partsDir, name);
    if (name.endsWith('.list')) {
      sources.push(...parseOneLineSources(await readIfPresent(path), path));
    } else if (name.endsWith('.sources')) {
      sources.push(...parseDeb822Sources(await readIfPresent(path), path));
    }
  }
  return sources;
}

/**
 * Picks the mirror to debootstrap from: the first binary ("deb") entry that has component
 * main, a suite in `suites` and a URI that debootstrap can fetch. Suites are tried in order.
 */
export function findDebianMirror(
  sources: readonly AptSource[],
  suites: readonly string[],
): AptSource | undefined {
  for (const suite of suites) {
    const match = sources.find(
      (source) =>
        source.type === 'deb' &&
        source.suite === suite &&
        source.components.includes('main') &&
        DEBOOTSTRAP_SCHEMES.some((scheme) => source.uri.startsWith(scheme)),
    );
    if (match !== undefined) {
      return match;
    }
  }
  return undefined;
}

/** Returns VERSION_CODENAME from os-release text, e.g. "bookworm", or undefined. */
export function parseOsReleaseCodename(text: string): string | undefined {
  const match = /^VERSION_CODENAME=["']?([^"'\n]*)["']?$/m.exec(text);
  return match?.[1] || undefined;
}

function readStanzas(text: string): Map<string, string>[] {
  const stanzas: Map<string, string>[] = [];
  let current = new Map<string, string>();
  let lastField: string | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) {
      continue;
    }
    if (line.trim() === '') {
      if (current.size > 0) {
        stanzas.push(current);
      }
      current = new Map();
      lastField = undefined;
    } else if (/^\s/.test(line)) {
      if (lastField !== undefined) {
        current.set(lastField, `${current.get(lastField) ?? ''}\n${line.trim()}`);
      }
    } else {
      const [field = '', value = ''] = splitOnce(line, ':');
      lastField = field.trim().toLowerCase();
      current.set(lastField, value.trim());
    }
  }
  if (current.size > 0) {
    stanzas.push(current);
  }
  return stanzas;
}

function stripComment(line: string): string {
  const hash = line.indexOf('#');
  return hash === -1 ? line : line.slice(0, hash);
}

function splitOnce(text: string, separator: string): [string, string] | [string] {
  const index = text.indexOf(separator);
  return index === -1 ? [text] : [text.slice(0, index), text.slice(index + 1)];
}

async function readIfPresent(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      return '';
    }
    throw error;
  }
}
