import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  findDebianMirror,
  parseDeb822Sources,
  parseOneLineSources,
  parseOsReleaseCodename,
  readAptSources,
} from '../../src/image/apt-sources.js';

describe('parseOneLineSources', () => {
  it('parses type, URI, suite and components', () => {
    const [source, ...rest] = parseOneLineSources(
      'deb http://mirror.example/debian bookworm main contrib\n',
      'sources.list',
    );
    assert.equal(rest.length, 0);
    assert.equal(source?.type, 'deb');
    assert.equal(source?.uri, 'http://mirror.example/debian');
    assert.equal(source?.suite, 'bookworm');
    assert.deepEqual(source?.components, ['main', 'contrib']);
    assert.equal(source?.file, 'sources.list');
  });

  it('skips comment lines and strips trailing comments', () => {
    const sources = parseOneLineSources(
      [
        '# deb http://commented.example/debian bookworm main',
        '   # indented comment',
        '',
        'deb http://mirror.example/debian bookworm main # the main mirror',
      ].join('\n'),
      'f',
    );
    assert.equal(sources.length, 1);
    assert.equal(sources[0]?.uri, 'http://mirror.example/debian');
    assert.deepEqual(sources[0]?.components, ['main']);
  });

  it('reads bracketed options', () => {
    const sources = parseOneLineSources(
      [
        'deb [signed-by=/usr/share/keyrings/debian.gpg arch=amd64] http://a.example/debian bookworm main',
        'deb [ Signed-By=/k.gpg ] http://b.example/debian bookworm main',
      ].join('\n'),
      'f',
    );
    assert.equal(sources.length, 2);
    assert.equal(sources[0]?.uri, 'http://a.example/debian');
    assert.equal(sources[0]?.options['signed-by'], '/usr/share/keyrings/debian.gpg');
    assert.equal(sources[0]?.options['arch'], 'amd64');
    assert.equal(sources[1]?.uri, 'http://b.example/debian');
    assert.equal(sources[1]?.options['signed-by'], '/k.gpg');
  });

  it('keeps deb-src entries with their type', () => {
    const sources = parseOneLineSources('deb-src http://m.example/debian bookworm main', 'f');
    assert.equal(sources[0]?.type, 'deb-src');
  });

  it('skips lines without a suite or with an unclosed option list', () => {
    const sources = parseOneLineSources(
      'deb http://only-uri.example/debian\ndeb [arch=amd64 http://x.example bookworm main',
      'f',
    );
    assert.deepEqual(sources, []);
  });
});

describe('parseDeb822Sources', () => {
  const debianSources = [
    'Types: deb deb-src',
    '# a comment inside the stanza',
    'URIs: http://mirror.example/debian',
    'Suites: bookworm bookworm-updates',
    'Components: main non-free-firmware',
    'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg',
    '',
    'Types: deb',
    'URIs: http://security.example/debian-security',
    'Suites: bookworm-security',
    'Components: main',
  ].join('\n');

  it('expands every type and suite of a stanza', () => {
    const sources = parseDeb822Sources(debianSources, 'debian.sources');
    const described = sources.map((source) => `${source.type} ${source.uri} ${source.suite}`);
    assert.deepEqual(described, [
      'deb http://mirror.example/debian bookworm',
      'deb http://mirror.example/debian bookworm-updates',
      'deb-src http://mirror.example/debian bookworm',
      'deb-src http://mirror.example/debian bookworm-updates',
      'deb http://security.example/debian-security bookworm-security',
    ]);
  });

  it('reads components and other fields as options', () => {
    const [first] = parseDeb822Sources(debianSources, 'debian.sources');
    assert.deepEqual(first?.components, ['main', 'non-free-firmware']);
    assert.equal(first?.options['signed-by'], '/usr/share/keyrings/debian-archive-keyring.gpg');
    assert.equal(first?.file, 'debian.sources');
  });

  it('skips stanzas with Enabled: no', () => {
    const text =
      'Enabled: no\nTypes: deb\nURIs: http://off.example\nSuites: bookworm\nComponents: main';
    assert.deepEqual(parseDeb822Sources(text, 'f'), []);
  });

  it('joins continuation lines of a field', () => {
    const text = [
      'Types: deb',
      'URIs: http://first.example/debian',
      ' http://second.example/debian',
      'Suites: bookworm',
      'Components: main',
    ].join('\n');
    const uris = parseDeb822Sources(text, 'f').map((source) => source.uri);
    assert.deepEqual(uris, ['http://first.example/debian', 'http://second.example/debian']);
  });

  it('accepts lower-case fields and whitespace-only separators', () => {
    const text = 'types: deb\nuris: http://m.example\nsuites: bookworm\ncomponents: main\n   \n';
    const sources = parseDeb822Sources(text, 'f');
    assert.equal(sources.length, 1);
    assert.equal(sources[0]?.uri, 'http://m.example');
  });
});

describe('findDebianMirror', () => {
  const sources = [
    ...parseOneLineSources(
      [
        'deb-src http://src-only.example/debian bookworm main',
        'deb http://contrib-only.example/debian bookworm contrib',
        'deb cdrom:[Debian 12]/ bookworm main',
        'deb http://updates.example/debian bookworm-updates main',
        'deb https://chosen.example/debian bookworm main',
        'deb http://later.example/debian bookworm main',
        'deb http://trixie.example/debian trixie main',
      ].join('\n'),
      'f',
    ),
  ];

  it('picks the first binary entry with the suite and main', () => {
    assert.equal(findDebianMirror(sources, ['bookworm'])?.uri, 'https://chosen.example/debian');
  });

  it('tries suites in order', () => {
    assert.equal(findDebianMirror(sources, ['sid', 'trixie'])?.uri, 'http://trixie.example/debian');
  });

  it('returns undefined when no entry matches', () => {
    assert.equal(findDebianMirror(sources, ['buster']), undefined);
  });
});

describe('parseOsReleaseCodename', () => {
  it('reads quoted and unquoted codenames', () => {
    assert.equal(parseOsReleaseCodename('ID=debian\nVERSION_CODENAME=bookworm\n'), 'bookworm');
    assert.equal(parseOsReleaseCodename('VERSION_CODENAME="trixie"\n'), 'trixie');
  });

  it('returns undefined when missing or empty', () => {
    assert.equal(parseOsReleaseCodename('ID=debian\n'), undefined);
    assert.equal(parseOsReleaseCodename('VERSION_CODENAME=\n'), undefined);
  });
});

describe('readAptSources', () => {
  it('reads sources.list first, then sources.list.d in name order', async () => {
    const aptDir = await mkdtemp(join(tmpdir(), 'hearth-apt-'));
    try {
      await mkdir(join(aptDir, 'sources.list.d'));
      await writeFile(
        join(aptDir, 'sources.list'),
        'deb http://one.example/debian bookworm main\n',
      );
      await writeFile(
        join(aptDir, 'sources.list.d', 'b.sources'),
        'Types: deb\nURIs: http://three.example/debian\nSuites: bookworm\nComponents: main\n',
      );
      await writeFile(
        join(aptDir, 'sources.list.d', 'a.list'),
        'deb http://two.example/debian bookworm main\n',
      );
      await writeFile(
        join(aptDir, 'sources.list.d', 'c.list.disabled'),
        'deb http://ignored.example/debian bookworm main\n',
      );

      const uris = (await readAptSources(aptDir)).map((source) => source.uri);

      assert.deepEqual(uris, [
        'http://one.example/debian',
        'http://two.example/debian',
        'http://three.example/debian',
      ]);
    } finally {
      await rm(aptDir, { recursive: true, force: true });
    }
  });

  it('treats a missing sources.list and directory as empty', async () => {
    const aptDir = await mkdtemp(join(tmpdir(), 'hearth-apt-'));
    try {
      assert.deepEqual(await readAptSources(aptDir), []);
    } finally {
      await rm(aptDir, { recursive: true, force: true });
    }
  });
});
