import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  hashFields,
  kernelHash,
  readGuestFiles,
  rootfsHash,
  type GuestFile,
  type KernelInputs,
  type RootfsInputs,
} from '../../src/image/hash.js';

const kernelInputs: KernelInputs = {
  fragment: Buffer.from('CONFIG_BLOCK=y\nCONFIG_EXT4_FS=y\n'),
  sourceVersion: '6.1.192-3',
  builderVersion: 1,
};

const guestFiles: GuestFile[] = [
  { path: 'agent.py', data: Buffer.from('print("agent")\n'), executable: false },
  { path: 'init', data: Buffer.from('#!/bin/sh\nexec agent\n'), executable: true },
];

const rootfsInputs: RootfsInputs = {
  packages: ['python3', 'bash'],
  suite: 'bookworm',
  guestFiles,
  builderVersion: 1,
};

describe('hashFields', () => {
  it('returns 16 hex digits', () => {
    assert.match(hashFields([['a', 'b']]), /^[0-9a-f]{16}$/);
  });

  it('does not confuse field boundaries', () => {
    assert.notEqual(
      hashFields([
        ['a', 'bc'],
        ['d', ''],
      ]),
      hashFields([
        ['a', 'b'],
        ['cd', ''],
      ]),
    );
  });
});

describe('kernelHash', () => {
  it('is stable for equal inputs', () => {
    const copy = { ...kernelInputs, fragment: Buffer.from(kernelInputs.fragment) };
    assert.equal(kernelHash(copy), kernelHash(kernelInputs));
  });

  it('changes when the fragment changes', () => {
    const changed = { ...kernelInputs, fragment: Buffer.from('CONFIG_BLOCK=y\n') };
    assert.notEqual(kernelHash(changed), kernelHash(kernelInputs));
  });

  it('changes when the source version changes', () => {
    const changed = { ...kernelInputs, sourceVersion: '6.1.193-1' };
    assert.notEqual(kernelHash(changed), kernelHash(kernelInputs));
  });

  it('changes when the builder version changes', () => {
    const changed = { ...kernelInputs, builderVersion: 2 };
    assert.notEqual(kernelHash(changed), kernelHash(kernelInputs));
  });
});

describe('rootfsHash', () => {
  it('is stable for equal inputs, whatever the file and package order', () => {
    const reordered = {
      ...rootfsInputs,
      packages: [...rootfsInputs.packages].reverse(),
      guestFiles: [...guestFiles].reverse(),
    };
    assert.equal(rootfsHash(reordered), rootfsHash(rootfsInputs));
  });

  it('changes when one guest file changes', () => {
    const changedFiles = guestFiles.map((file) =>
      file.path === 'agent.py' ? { ...file, data: Buffer.from('print("agent v2")\n') } : file,
    );
    const changed = { ...rootfsInputs, guestFiles: changedFiles };
    assert.notEqual(rootfsHash(changed), rootfsHash(rootfsInputs));
  });

  it('changes when a guest file is renamed', () => {
    const changedFiles = guestFiles.map((file) =>
      file.path === 'agent.py' ? { ...file, path: 'main.py' } : file,
    );
    const changed = { ...rootfsInputs, guestFiles: changedFiles };
    assert.notEqual(rootfsHash(changed), rootfsHash(rootfsInputs));
  });

  it('changes when a guest file loses its executable bit', () => {
    const changedFiles = guestFiles.map((file) => ({ ...file, executable: false }));
    const changed = { ...rootfsInputs, guestFiles: changedFiles };
    assert.notEqual(rootfsHash(changed), rootfsHash(rootfsInputs));
  });

  it('changes when a guest file is added', () => {
    const extra = { path: 'extra.py', data: Buffer.from(''), executable: false };
    const changed = { ...rootfsInputs, guestFiles: [...guestFiles, extra] };
    assert.notEqual(rootfsHash(changed), rootfsHash(rootfsInputs));
  });

  it('changes when the package list or suite changes', () => {
    const morePackages = { ...rootfsInputs, packages: [...rootfsInputs.packages, 'curl'] };
    const otherSuite = { ...rootfsInputs, suite: 'trixie' };
    assert.notEqual(rootfsHash(morePackages), rootfsHash(rootfsInputs));
    assert.notEqual(rootfsHash(otherSuite), rootfsHash(rootfsInputs));
  });
});

describe('readGuestFiles', () => {
  it('reads nested files sorted, with modes, skipping bytecode', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hearth-guest-'));
    try {
      await mkdir(join(dir, 'lib', '__pycache__'), { recursive: true });
      await writeFile(join(dir, 'init'), '#!/bin/sh\n');
      await chmod(join(dir, 'init'), 0o755);
      await writeFile(join(dir, 'agent.py'), 'pass\n');
      await writeFile(join(dir, 'lib', 'util.py'), 'x = 1\n');
      await writeFile(join(dir, 'lib', '__pycache__', 'util.cpython-311.pyc'), 'bytecode');
      await writeFile(join(dir, 'stray.pyc'), 'bytecode');

      const files = await readGuestFiles(dir);

      assert.deepEqual(
        files.map((file) => file.path),
        ['agent.py', 'init', 'lib/util.py'],
      );
      assert.deepEqual(
        files.map((file) => file.executable),
        [false, true, false],
      );
      assert.equal(files[2]?.data.toString(), 'x = 1\n');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('yields a different rootfs hash after one file is edited', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hearth-guest-'));
    try {
      await writeFile(join(dir, 'agent.py'), 'pass\n');
      await writeFile(join(dir, 'protocol.py'), 'VERSION = 1\n');
      const hashOf = async (): Promise<string> =>
        rootfsHash({ ...rootfsInputs, guestFiles: await readGuestFiles(dir) });
      const before = await hashOf();

      assert.equal(await hashOf(), before);
      await writeFile(join(dir, 'protocol.py'), 'VERSION = 2\n');
      assert.notEqual(await hashOf(), before);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
