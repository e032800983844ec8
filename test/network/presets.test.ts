import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { formatDomainPattern } from '../../src/network/domains.js';
import { formatCidr } from '../../src/network/ipv4.js';
import {
  discoverPackageIndexes,
  guestPackageConfig,
  parseAptProxies,
  parseIni,
  presetAllowance,
  type DiscoveryOptions,
} from '../../src/network/presets.js';

describe('package-manager preset', () => {
  let root: string;
  let etc: string;
  let home: string;
  const noTools: DiscoveryOptions = {
    askPipDefault: async () => null,
    askNpmRegistry: async () => null,
  };

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'hearth-presets-'));
    etc = join(root, 'etc');
    home = join(root, 'home');
    await mkdir(join(etc, 'apt/sources.list.d'), { recursive: true });
    await mkdir(join(etc, 'apt/apt.conf.d'), { recursive: true });
    await mkdir(join(home, '.config/pip'), { recursive: true });
    await writeFile(
      join(etc, 'apt/sources.list.d/debian.sources'),
      'Types: deb\nURIs: http://mirror.test/debian\nSuites: bookworm\nComponents: main\n',
    );
    await writeFile(join(etc, 'apt/sources.list'), 'deb [trusted=yes] file:/srv/local ./\n');
    await writeFile(
      join(etc, 'apt/apt.conf.d/01proxy'),
      'Acquire::http::Proxy "http://aptproxy.test:3142";\n',
    );
    await writeFile(join(etc, 'pip.conf'), '[global]\nindex-url = https://site.test/simple\n');
    await writeFile(
      join(home, '.config/pip/pip.conf'),
      '[global]\nindex_url = https://user:secret@pypi.test/simple\nextra-index-url =\n' +
        '    http://extra.test/simple\n    https://192.0.2.80/simple\n',
    );
    await writeFile(
      join(home, '.npmrc'),
      'registry=https://npm.test/\n@corp:registry=https://corp.test/npm/\n' +
        '//npm.test/:_authToken=secret\nregistry=${NPM_REGISTRY}\n',
    );
  });

  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('reads pip, npm and apt settings in their precedence order', async () => {
    const indexes = await discoverPackageIndexes(
      {},
      { ...noTools, env: {}, homeDir: home, etcDir: etc },
    );
    assert.equal(indexes.pip.indexUrl, 'https://user:secret@pypi.test/simple');
    assert.deepEqual(indexes.pip.extraIndexUrls, [
      'http://extra.test/simple',
      'https://192.0.2.80/simple',
    ]);
    assert.deepEqual(indexes.pip.trustedHosts, ['extra.test'], 'plain-HTTP indexes are trusted');
    assert.equal(indexes.npm.registry, 'https://npm.test/');
    assert.deepEqual(indexes.npm.scopedRegistries, { '@corp': 'https://corp.test/npm/' });
    assert.deepEqual(indexes.apt.uris, ['http://mirror.test/debian']);
    assert.equal(indexes.apt.httpProxy, 'http://aptproxy.test:3142');
  });

  it('lets environment variables win over files', async () => {
    const env = {
      PIP_INDEX_URL: 'https://env.test/simple',
      npm_config_registry: 'https://npmenv.test/',
    };
    const indexes = await discoverPackageIndexes(
      {},
      { ...noTools, env, homeDir: home, etcDir: etc },
    );
    assert.equal(indexes.pip.indexUrl, 'https://env.test/simple');
    assert.equal(indexes.npm.registry, 'https://npmenv.test/');
  });

  it('allows every index host and IP-literal hosts as /32 ranges', async () => {
    const indexes = await discoverPackageIndexes(
      { extraDomains: ['*.cdn.test'] },
      { ...noTools, env: {}, homeDir: home, etcDir: etc },
    );
    const allowance = presetAllowance(indexes);
    assert.deepEqual(allowance.domains.map(formatDomainPattern).sort(), [
      '*.cdn.test',
      'aptproxy.test',
      'corp.test',
      'extra.test',
      'mirror.test',
      'npm.test',
      'pypi.test',
    ]);
    assert.deepEqual(allowance.cidrs.map(formatCidr), ['192.0.2.80/32']);
  });

  it('asks pip for its default index and allows its file host', async () => {
    const indexes = await discoverPackageIndexes(
      {},
      {
        env: {},
        homeDir: join(root, 'nobody'),
        etcDir: join(root, 'noetc'),
        askPipDefault: async () => ({
          indexUrl: 'https://index.test/simple',
          fileHost: 'files.test',
        }),
        askNpmRegistry: async () => 'https://npmdefault.test/',
      },
    );
    assert.equal(indexes.pip.indexUrl, 'https://index.test/simple');
    assert.deepEqual(indexes.pipFileHosts, ['files.test']);
    assert.equal(indexes.npm.registry, 'https://npmdefault.test/');
  });

  it('uses overrides in place of discovery', async () => {
    const indexes = await discoverPackageIndexes(
      { pipIndexUrls: ['http://pypi.world.test/simple/'], npmRegistry: null, aptUrls: [] },
      {
        env: {},
        homeDir: home,
        etcDir: etc,
        askPipDefault: async () => assert.fail('pip must not be asked'),
        askNpmRegistry: async () => assert.fail('npm must not be asked'),
      },
    );
    assert.deepEqual(presetAllowance(indexes).domains.map(formatDomainPattern), [
      'pypi.world.test',
    ]);
    assert.deepEqual(indexes.pip.trustedHosts, ['pypi.world.test']);
  });

  it('writes guest settings without credentials', async () => {
    const indexes = await discoverPackageIndexes(
      {},
      { ...noTools, env: {}, homeDir: home, etcDir: etc },
    );
    const files = guestPackageConfig(indexes);
    assert.equal(
      files.pip,
      '[global]\nindex-url = https://pypi.test/simple\n' +
        'extra-index-url = http://extra.test/simple https://192.0.2.80/simple\n' +
        'trusted-host = extra.test\n',
    );
    assert.equal(files.npm, 'registry=https://npm.test/\n@corp:registry=https://corp.test/npm/\n');
    assert.equal(files.apt, 'Acquire::http::Proxy "http://aptproxy.test:3142/";\n');
    for (const text of Object.values(files)) assert.ok(!text.includes('secret'));
  });

  it('parses INI continuations and apt proxy lines', () => {
    const ini = parseIni('# c\n[global]\nkey = a\n  b\n[install]\nother: c\n');
    assert.equal(ini.get('global')?.get('key'), 'a\nb');
    assert.equal(ini.get('install')?.get('other'), 'c');
    assert.deepEqual(
      parseAptProxies(
        'Acquire::https::Proxy "https://p.test/";\nAcquire::http::Proxy::host "DIRECT";',
      ),
      { httpProxy: null, httpsProxy: 'https://p.test/' },
    );
  });
});
