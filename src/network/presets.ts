// The "package managers" preset: the package indexes the HOST is configured to use (apt
// sources, pip's index-url, npm's registry), so that a session with allow_package_managers
// reaches exactly those, and the guest is configured to use them too. No registry host name
// is written in hearth; where a tool has no configuration, the tool itself is asked for its
// built-in default.
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readAptSources } from '../image/apt-sources.js';
import { parseDomainPattern, normalizeDomainName, type DomainPattern } from './domains.js';
import { parseIpv4, parseIpv4Cidr } from './ipv4.js';
import type { PresetAllowance } from './policy.js';

export interface PackageIndexes {
  pip: { indexUrl: string | null; extraIndexUrls: string[]; trustedHosts: string[] };
  /** Extra hosts a pip index serves its files from, e.g. a separate file storage host. */
  pipFileHosts: string[];
  npm: { registry: string | null; scopedRegistries: Record<string, string> };
  apt: { uris: string[]; httpProxy: string | null; httpsProxy: string | null };
  /** Names or wildcards from hearthd's configuration, added to the preset as they are. */
  extraDomains: string[];
}

/** Values from hearthd's configuration; a field that is set replaces discovery for it. */
export interface PresetOverrides {
  /** The first is pip's index-url, the rest extra-index-urls. [] means no pip index. */
  pipIndexUrls?: string[];
  npmRegistry?: string | null;
  aptUrls?: string[];
  extraDomains?: string[];
}

/** Discovery inputs; each field defaults to the real host's file, variable or tool. */
export interface DiscoveryOptions {
  env?: NodeJS.ProcessEnv;
  homeDir?: string;
  etcDir?: string;
  /** Asks the host's pip for its default index; null when pip is missing. */
  askPipDefault?: () => Promise<{ indexUrl: string; fileHost: string } | null>;
  /** Asks the host's npm for its effective registry; null when npm is missing. */
  askNpmRegistry?: () => Promise<string | null>;
}

export async function discoverPackageIndexes(
  overrides: PresetOverrides,
  options: DiscoveryOptions = {},
): Promise<PackageIndexes> {
  const env = options.env ?? process.env;
  const home = options.homeDir ?? env.HOME ?? '/root';
  const etc = options.etcDir ?? '/etc';

  const pip = overrides.pipIndexUrls
    ? {
        indexUrl: overrides.pipIndexUrls[0] ?? null,
        extraIndexUrls: overrides.pipIndexUrls.slice(1),
        trustedHosts: [],
      }
    : await readPipConfig(env, home, etc);
  const pipFileHosts: string[] = [];
  if (!overrides.pipIndexUrls) {
    const pipDefault = await (options.askPipDefault ?? askPipDefault)();
    if (pipDefault && pip.indexUrl === null) pip.indexUrl = pipDefault.indexUrl;
    // The default index serves files from another host; allow it when that index is used.
    const defaultHost = pipDefault && hostOf(pipDefault.indexUrl);
    if (
      pipDefault &&
      [pip.indexUrl, ...pip.extraIndexUrls].some((url) => hostOf(url ?? '') === defaultHost)
    ) {
      pipFileHosts.push(pipDefault.fileHost);
    }
  }
  pip.trustedHosts = unique([
    ...pip.trustedHosts,
    ...plainHttpHosts([pip.indexUrl, ...pip.extraIndexUrls]),
  ]);

  let npm: PackageIndexes['npm'];
  if (overrides.npmRegistry !== undefined) {
    npm = { registry: overrides.npmRegistry || null, scopedRegistries: {} };
  } else {
    npm = await readNpmConfig(env, home, etc);
    npm.registry ??= await (options.askNpmRegistry ?? askNpmRegistry)();
  }

  const apt = overrides.aptUrls
    ? { uris: overrides.aptUrls, httpProxy: null, httpsProxy: null }
    : await readAptConfig(join(etc, 'apt'));

  return { pip, pipFileHosts, npm, apt, extraDomains: overrides.extraDomains ?? [] };
}

/** Lists the names (and IP-literal hosts, as /32 ranges) that the preset allows. */
export function presetAllowance(indexes: PackageIndexes): PresetAllowance {
  const urls = [
    indexes.pip.indexUrl,
    ...indexes.pip.extraIndexUrls,
    indexes.npm.registry,
    ...Object.values(indexes.npm.scopedRegistries),
    ...indexes.apt.uris,
    indexes.apt.httpProxy,
    indexes.apt.httpsProxy,
  ];
  const hosts = [...urls.map((url) => hostOf(url ?? '')), ...indexes.pipFileHosts];
  const domains: DomainPattern[] = [];
  const cidrs = [];
  for (const host of hosts) {
    if (!host) continue;
    if (parseIpv4(host) !== null) cidrs.push(parseIpv4Cidr(host));
    else if (normalizeDomainName(host))
      domains.push({ kind: 'exact' as const, name: normalizeDomainName(host)! });
  }
  for (const extra of indexes.extraDomains) domains.push(parseDomainPattern(extra));
  return { domains, cidrs };
}

/** True when the preset names at least one index, so allow_package_managers means something. */
export function hasAnyIndex(indexes: PackageIndexes): boolean {
  const allowance = presetAllowance(indexes);
  return allowance.domains.length + allowance.cidrs.length > 0;
}

/**
 * Writes the configuration files that make a guest's package managers use the preset's
 * indexes: /etc/pip.conf, /etc/npmrc and an apt.conf.d snippet for a proxy. Credentials in
 * URLs are removed, because the guest runs untrusted code and must not get the host's secrets.
 */
export function guestPackageConfig(indexes: PackageIndexes): {
  pip?: string;
  npm?: string;
  apt?: string;
} {
  const files: { pip?: string; npm?: string; apt?: string } = {};
  const { pip, npm, apt } = indexes;
  if (pip.indexUrl || pip.extraIndexUrls.length > 0) {
    const lines = ['[global]'];
    if (pip.indexUrl) lines.push(`index-url = ${withoutCredentials(pip.indexUrl)}`);
    if (pip.extraIndexUrls.length > 0) {
      lines.push(`extra-index-url = ${pip.extraIndexUrls.map(withoutCredentials).join(' ')}`);
    }
    if (pip.trustedHosts.length > 0) lines.push(`trusted-host = ${pip.trustedHosts.join(' ')}`);
    files.pip = lines.join('\n') + '\n';
  }
  if (npm.registry || Object.keys(npm.scopedRegistries).length > 0) {
    const lines = npm.registry ? [`registry=${withoutCredentials(npm.registry)}`] : [];
    for (const [scope, url] of Object.entries(npm.scopedRegistries)) {
      lines.push(`${scope}:registry=${withoutCredentials(url)}`);
    }
    files.npm = lines.join('\n') + '\n';
  }
  const proxies = [
    apt.httpProxy && `Acquire::http::Proxy "${withoutCredentials(apt.httpProxy)}";`,
    apt.httpsProxy && `Acquire::https::Proxy "${withoutCredentials(apt.httpsProxy)}";`,
  ].filter(Boolean);
  if (proxies.length > 0) files.apt = proxies.join('\n') + '\n';
  return files;
}

/** Parses pip's INI-style configuration: sections, `key = value`, indented continuations. */
export function parseIni(text: string): Map<string, Map<string, string>> {
  const sections = new Map<string, Map<string, string>>();
  let section: Map<string, string> | null = null;
  let lastKey: string | null = null;
  for (const line of text.split('\n')) {
    if (/^\s*[#;]/.test(line) || line.trim() === '') continue;
    const header = /^\s*\[([^\]]+)\]\s*$/.exec(line);
    if (header) {
      section = sections.get(header[1]!.trim()) ?? new Map();
      sections.set(header[1]!.trim(), section);
      lastKey = null;
    } else if (/^\s/.test(line) && section && lastKey) {
      section.set(lastKey, `${section.get(lastKey)}\n${line.trim()}`);
    } else if (section) {
      const match = /^([^=:]+)[=:](.*)$/.exec(line);
      if (!match) continue;
      lastKey = match[1]!.trim().toLowerCase().replaceAll('_', '-');
      section.set(lastKey, match[2]!.trim());
    }
  }
  return sections;
}

/**
 * Reads pip's settings in pip's order: site-wide files, user files, PIP_CONFIG_FILE, then
 * PIP_* variables. [install] overrides [global], as it does for `pip install`.
 */
async function readPipConfig(env: NodeJS.ProcessEnv, home: string, etc: string) {
  const files = [
    join(etc, 'xdg/pip/pip.conf'),
    join(etc, 'pip.conf'),
    join(home, '.pip/pip.conf'),
    join(env.XDG_CONFIG_HOME ?? join(home, '.config'), 'pip/pip.conf'),
    ...(env.PIP_CONFIG_FILE ? [env.PIP_CONFIG_FILE] : []),
  ];
  const settings = new Map<string, string>();
  for (const file of files) {
    const ini = parseIni(await readFile(file, 'utf8').catch(() => ''));
    for (const name of ['global', 'install']) {
      for (const [key, value] of ini.get(name) ?? []) settings.set(key, value);
    }
  }
  const fromEnv: Record<string, string | undefined> = {
    'index-url': env.PIP_INDEX_URL,
    'extra-index-url': env.PIP_EXTRA_INDEX_URL,
    'trusted-host': env.PIP_TRUSTED_HOST,
  };
  for (const [key, value] of Object.entries(fromEnv)) if (value) settings.set(key, value);
  const words = (key: string) => (settings.get(key) ?? '').split(/\s+/).filter(Boolean);
  return {
    indexUrl: words('index-url')[0] ?? null,
    extraIndexUrls: words('extra-index-url'),
    trustedHosts: words('trusted-host'),
  };
}

/**
 * Reads npm's registry settings: npm_config_* variables first, then the user's .npmrc,
 * then the global npmrc files that Debian's and upstream's npm use. Values with ${...}
 * expansions and lines with credentials are skipped.
 */
async function readNpmConfig(env: NodeJS.ProcessEnv, home: string, etc: string) {
  const npm: PackageIndexes['npm'] = { registry: null, scopedRegistries: {} };
  const files = [
    env.NPM_CONFIG_USERCONFIG ?? env.npm_config_userconfig ?? join(home, '.npmrc'),
    env.NPM_CONFIG_GLOBALCONFIG ?? env.npm_config_globalconfig ?? join(etc, 'npmrc'),
    // npm installed under /usr/local keeps its global npmrc there.
    join(etc, '../usr/local/etc/npmrc'),
  ];
  npm.registry = env.npm_config_registry ?? env.NPM_CONFIG_REGISTRY ?? null;
  for (const file of files) {
    const text = await readFile(file, 'utf8').catch(() => '');
    for (const line of text.split('\n')) {
      const match = /^\s*(@[^:=\s]+:)?registry\s*=\s*(\S+)\s*$/.exec(line);
      if (!match || match[2]!.includes('${')) continue;
      const scope = match[1]?.slice(0, -1);
      if (scope) npm.scopedRegistries[scope] ??= match[2]!;
      else npm.registry ??= match[2]!;
    }
  }
  return npm;
}

/** Reads the host's apt sources and any Acquire::http(s)::Proxy setting. */
async function readAptConfig(aptDir: string): Promise<PackageIndexes['apt']> {
  const uris = (await readAptSources(aptDir))
    .filter((source) => /^https?:\/\//.test(source.uri))
    .map((source) => source.uri);
  let text = await readFile(join(aptDir, 'apt.conf'), 'utf8').catch(() => '');
  const parts = await readdir(join(aptDir, 'apt.conf.d')).catch(() => [] as string[]);
  for (const name of parts.sort()) {
    text += '\n' + (await readFile(join(aptDir, 'apt.conf.d', name), 'utf8').catch(() => ''));
  }
  return { uris: unique(uris), ...parseAptProxies(text) };
}

/** Finds `Acquire::http::Proxy "URL";` and its https twin; later settings win, as in apt. */
export function parseAptProxies(text: string): {
  httpProxy: string | null;
  httpsProxy: string | null;
} {
  const proxies = { httpProxy: null as string | null, httpsProxy: null as string | null };
  for (const match of text.matchAll(/Acquire::(https?)::Proxy\s+"([^"]+)"\s*;/gi)) {
    if (!/^https?:\/\//.test(match[2]!)) continue;
    if (match[1]!.toLowerCase() === 'https') proxies.httpsProxy = match[2]!;
    else proxies.httpProxy = match[2]!;
  }
  return proxies;
}

function askPipDefault(): Promise<{ indexUrl: string; fileHost: string } | null> {
  const script =
    'from pip._internal.models.index import PyPI; print(PyPI.simple_url); ' +
    'print(PyPI.file_storage_domain)';
  return new Promise((resolve) => {
    execFile('python3', ['-c', script], { timeout: 10_000 }, (error, stdout) => {
      const [indexUrl, fileHost] = stdout.trim().split('\n');
      resolve(error || !indexUrl || !fileHost ? null : { indexUrl, fileHost });
    });
  });
}

function askNpmRegistry(): Promise<string | null> {
  return new Promise((resolve) => {
    execFile('npm', ['config', 'get', 'registry'], { timeout: 10_000 }, (error, stdout) => {
      const registry = stdout.trim();
      resolve(error || !/^https?:\/\//.test(registry) ? null : registry);
    });
  });
}

function hostOf(url: string): string | null {
  try {
    const parsed = new URL(url);
    return /^https?:$/.test(parsed.protocol) ? parsed.hostname.replace(/^\[|\]$/g, '') : null;
  } catch {
    return null;
  }
}

function plainHttpHosts(urls: (string | null)[]): string[] {
  return urls
    .filter((url): url is string => url !== null && url.startsWith('http://'))
    .map((url) => hostOf(url))
    .filter((host): host is string => host !== null);
}

export function withoutCredentials(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.username = '';
    parsed.password = '';
    return parsed.toString();
  } catch {
    return url;
  }
}

function unique<T>(values: T[]): T[] {
  return [...new Set(values)];
}
