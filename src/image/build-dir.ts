import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/**
 * Runs `build` in a fresh directory under `<home>/build/`, named after `name` (such as
 * "kernel-<hash>"), and removes that directory afterwards, whether the build succeeded or not.
 *
 * A lock file keeps two processes from building the same image at once. A lock left by a
 * process that no longer runs is taken over, and the directories that process left behind
 * are removed first.
 */
export async function withBuildDir<T>(
  home: string,
  name: string,
  build: (dir: string) => Promise<T>,
): Promise<T> {
  const buildRoot = join(home, 'build');
  await mkdir(buildRoot, { recursive: true });
  const lockPath = join(buildRoot, `${name}.lock`);
  await acquireLock(lockPath, name, buildRoot);
  try {
    const dir = await mkdtemp(join(buildRoot, `${name}-`));
    try {
      return await build(dir);
    } finally {
      await removeTree(dir);
    }
  } finally {
    await rm(lockPath, { force: true });
  }
}

/**
 * Moves a finished build output to its cache path with one rename, so the cache path either
 * does not exist or contains a complete image. Both paths must be on the same filesystem.
 * If another process installed the same image first, its copy is kept.
 */
export async function installAtomically(builtDir: string, finalDir: string): Promise<void> {
  await mkdir(join(finalDir, '..'), { recursive: true });
  try {
    await rename(builtDir, finalDir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') {
      throw error;
    }
  }
}

/**
 * Deletes a directory tree after unmounting anything mounted inside it. debootstrap mounts
 * /proc and /sys in its target, and bind-mounts host device nodes when it runs in a
 * container. A plain recursive delete would follow those mounts into the host.
 * Throws instead of deleting when a mount cannot be removed.
 */
export async function removeTree(dir: string): Promise<void> {
  for (const mountPoint of await mountsUnder(dir)) {
    await execFileAsync('umount', ['--lazy', mountPoint]).catch(() => undefined);
  }
  const remaining = await mountsUnder(dir);
  if (remaining.length > 0) {
    throw new Error(
      `Refusing to delete ${dir} because these mounts inside it could not be unmounted: ` +
        `${remaining.join(', ')}. Unmount them by hand, then delete the directory.`,
    );
  }
  await rm(dir, { recursive: true, force: true });
}

/** Returns the mount points at or below `dir`, deepest first. */
export async function mountsUnder(dir: string, mountsFile = '/proc/self/mounts'): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(mountsFile, 'utf8');
  } catch {
    return [];
  }
  return parseMountPoints(text)
    .filter((mountPoint) => mountPoint === dir || mountPoint.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/** Returns the mount point column of /proc/self/mounts text, with octal escapes decoded. */
export function parseMountPoints(text: string): string[] {
  return text
    .split('\n')
    .map((line) => line.split(' ')[1])
    .filter((field): field is string => field !== undefined)
    .map((field) =>
      field.replace(/\\([0-7]{3})/g, (_escape, octal: string) =>
        String.fromCharCode(parseInt(octal, 8)),
      ),
    );
}

async function acquireLock(lockPath: string, name: string, buildRoot: string): Promise<void> {
  try {
    await writeFile(lockPath, `${process.pid}\n`, { flag: 'wx' });
    return;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw error;
    }
  }

  const ownerPid = Number.parseInt(await readFile(lockPath, 'utf8').catch(() => ''), 10);
  if (Number.isInteger(ownerPid) && (await isProcessAlive(ownerPid))) {
    throw new Error(
      `Another process (pid ${ownerPid}) is already building ${name}. Wait for it to finish. ` +
        `If pid ${ownerPid} is not a hearth build, delete ${lockPath} and try again.`,
    );
  }

  // The previous builder died, for example on Ctrl-C: clear what it left, then take over.
  for (const entry of await readdir(buildRoot)) {
    if (entry.startsWith(`${name}-`)) {
      await removeTree(join(buildRoot, entry));
    }
  }
  await rm(lockPath, { force: true });
  await writeFile(lockPath, `${process.pid}\n`, { flag: 'wx' });
}

/** Returns whether `pid` runs. A zombie, which has exited but is not yet reaped, does not. */
async function isProcessAlive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  // The state is the first field after the command name, which is in parentheses.
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z';
}
