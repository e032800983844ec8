import assert from 'node:assert/strict';
import { access, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  installAtomically,
  mountsUnder,
  parseMountPoints,
  withBuildDir,
} from '../../src/image/build-dir.js';

/** A pid that no process has: above the kernel's pid_max limit of 2^22. */
const UNUSED_PID = 4_194_305;

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

async function withTempHome(use: (home: string) => Promise<void>): Promise<void> {
  const home = await mkdtemp(join(tmpdir(), 'hearth-build-dir-'));
  try {
    await use(home);
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}

describe('parseMountPoints', () => {
  it('decodes octal escapes in mount points', () => {
    const text = ['proc /proc proc rw 0 0', '/dev/vda /mnt/with\\040space ext4 rw 0 0', ''].join(
      '\n',
    );
    assert.deepEqual(parseMountPoints(text), ['/proc', '/mnt/with space']);
  });
});

describe('mountsUnder', () => {
  it('lists mounts inside a directory, deepest first, and not its siblings', async () => {
    await withTempHome(async (dir) => {
      const mountsFile = join(dir, 'mounts');
      await writeFile(
        mountsFile,
        [
          'proc /build/x/root/proc proc rw 0 0',
          'tmpfs /build/x/root/dev tmpfs rw 0 0',
          'devtmpfs /build/x/root/dev/null devtmpfs rw 0 0',
          'proc /build/xy/proc proc rw 0 0',
          '',
        ].join('\n'),
      );
      assert.deepEqual(await mountsUnder('/build/x', mountsFile), [
        '/build/x/root/dev/null',
        '/build/x/root/proc',
        '/build/x/root/dev',
      ]);
    });
  });
});

describe('withBuildDir', () => {
  it('removes its directory and lock after success and after failure', async () => {
    await withTempHome(async (home) => {
      let usedDir = '';
      await withBuildDir(home, 'kernel-abc', async (dir) => {
        usedDir = dir;
        await writeFile(join(dir, 'partial'), 'data');
      });
      assert.equal(await exists(usedDir), false);

      const failure = withBuildDir(home, 'kernel-abc', async (dir) => {
        usedDir = dir;
        throw new Error('compile failed');
      });
      await assert.rejects(failure, /compile failed/);
      assert.equal(await exists(usedDir), false);
      assert.deepEqual(await readdir(join(home, 'build')), []);
    });
  });

  it('rejects while a live process holds the lock', async () => {
    await withTempHome(async (home) => {
      await mkdir(join(home, 'build'));
      await writeFile(join(home, 'build', 'rootfs-abc.lock'), `${process.pid}\n`);

      await assert.rejects(
        withBuildDir(home, 'rootfs-abc', async () => undefined),
        /Another process \(pid \d+\) is already building rootfs-abc/,
      );
    });
  });

  it('takes over a stale lock and clears what its owner left', async () => {
    await withTempHome(async (home) => {
      const buildRoot = join(home, 'build');
      await mkdir(join(buildRoot, 'rootfs-abc-old', 'root'), { recursive: true });
      await mkdir(join(buildRoot, 'rootfs-other-keep'));
      await writeFile(join(buildRoot, 'rootfs-abc.lock'), `${UNUSED_PID}\n`);

      const result = await withBuildDir(home, 'rootfs-abc', async () => 'built');

      assert.equal(result, 'built');
      assert.deepEqual(await readdir(buildRoot), ['rootfs-other-keep']);
    });
  });
});

describe('installAtomically', () => {
  it('moves the output into place and keeps an existing image', async () => {
    await withTempHome(async (home) => {
      const first = join(home, 'first');
      const second = join(home, 'second');
      const finalDir = join(home, 'images', 'kernel-abc');
      await mkdir(first);
      await writeFile(join(first, 'vmlinux'), 'first');
      await mkdir(second);
      await writeFile(join(second, 'vmlinux'), 'second');

      await installAtomically(first, finalDir);
      await installAtomically(second, finalDir);

      assert.equal(await readFile(join(finalDir, 'vmlinux'), 'utf8'), 'first');
      assert.equal(await exists(first), false);
      assert.equal(await exists(second), true);
    });
  });
});
