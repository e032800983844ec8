// How a Firecracker process is started and where its files live. Without the jailer,
// Firecracker opens host paths and keeps its sockets in the VM's run directory. With the
// jailer, Firecracker is chrooted into <chroot_base>/<exec_file_name>/<id>/root, so every
// file it opens is hard-linked (or copied) into that directory and named by its path there.
import { constants } from 'node:fs';
import { chown, copyFile, link, mkdir, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';

import type { VmSpec } from '../types.js';
import { findExecutable } from './availability.js';
import { FirecrackerError } from './errors.js';

export interface JailerOptions {
  /** The jailer binary's name or path. Default `jailer`. */
  jailerPath?: string;
  /** The user Firecracker runs as. It must be able to read the kernel and the base image. */
  uid: number;
  gid: number;
  /** Base directory of the jailer's chroots. Default `<runDir>/jail`, so it goes with the VM. */
  chrootBaseDir?: string;
  /** Settings the jailer writes into the VM's cgroup, each `<file>=<value>` (cpu.max=...). */
  cgroups?: string[];
  /** The jailer's default is cgroup v1. */
  cgroupVersion?: 1 | 2;
  /** A network namespace handle the jailer joins, e.g. /var/run/netns/hearth-vm1. */
  netns?: string;
}

/** A file that must be visible to a jailed Firecracker. */
export interface JailFile {
  /** Name inside the jail root. */
  name: string;
  hostPath: string;
  /**
   * `link` fails unless the file can be hard-linked, because Firecracker must write to the
   * original (a scratch disk). `link-or-copy` copies when a hard link is impossible.
   */
  mode: 'link' | 'link-or-copy';
  /** Makes the jailed user the owner. Changes the original too, since a hard link shares it. */
  chownToJailUser?: boolean;
}

export interface LaunchPlan {
  command: string;
  args: string[];
  /** The user a jailed Firecracker runs as, or null when it is not jailed. */
  jailUser: { uid: number; gid: number } | null;
  /** Directory of the VM's sockets and files, on the host. */
  hostDir: string;
  /** The same directory in Firecracker's view: `/` when jailed, else `hostDir`. */
  vmmDir: string;
  /** API socket, on the host. */
  apiSocketPath: string;
  /** Paths Firecracker must be given for the files passed to the plan, by JailFile name. */
  vmmPaths: Map<string, string>;
  /** Removes everything the plan and Firecracker created for this VM. */
  cleanup(): Promise<void>;
}

const API_SOCKET_NAME = 'firecracker.sock';
export const VSOCK_SOCKET_NAME = 'vsock.sock';

/** The jailer accepts ids of letters, digits and hyphens, at most 64 characters long. */
const JAILER_ID = /^[A-Za-z0-9-]{1,64}$/;

/** Unix socket paths longer than this do not fit in sockaddr_un on Linux. */
const MAX_SOCKET_PATH_BYTES = 107;

/** Rejects a socket path that Linux cannot bind, with the path in the message. */
export function checkSocketPath(path: string): void {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    throw new FirecrackerError(
      'firecracker_invalid_config',
      `The socket path ${path} is longer than ${MAX_SOCKET_PATH_BYTES} bytes, the maximum ` +
        'for a Unix socket. Use a shorter runDir or chroot base directory.',
    );
  }
}

async function removeFiles(paths: string[]): Promise<void> {
  await Promise.allSettled(paths.map((path) => rm(path, { force: true })));
}

/** Plans a Firecracker process that runs unjailed with its sockets in `spec.runDir`. */
export async function planDirectLaunch(
  spec: VmSpec,
  firecrackerPath: string,
  files: JailFile[],
): Promise<LaunchPlan> {
  const apiSocketPath = join(spec.runDir, API_SOCKET_NAME);
  const vsockPath = join(spec.runDir, VSOCK_SOCKET_NAME);
  checkSocketPath(apiSocketPath);
  checkSocketPath(vsockPath);
  await mkdir(spec.runDir, { recursive: true });
  await removeFiles([apiSocketPath, vsockPath]);

  return {
    command: firecrackerPath,
    args: ['--api-sock', apiSocketPath],
    jailUser: null,
    hostDir: spec.runDir,
    vmmDir: spec.runDir,
    apiSocketPath,
    vmmPaths: new Map(files.map((file) => [file.name, file.hostPath])),
    cleanup: () => removeFiles([apiSocketPath, vsockPath]),
  };
}

async function placeInJail(file: JailFile, jailRoot: string, uid: number, gid: number) {
  const target = join(jailRoot, file.name);
  await rm(target, { force: true });
  try {
    await link(file.hostPath, target);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const linkImpossible = code === 'EXDEV' || code === 'EPERM';
    if (file.mode === 'link' || !linkImpossible) {
      throw new FirecrackerError(
        'firecracker_invalid_config',
        `Could not hard-link ${file.hostPath} into the jail at ${target} (${code}). Keep it ` +
          'on the same filesystem as the chroot base directory, owned by the user running hearth.',
        { cause: error },
      );
    }
    // NOTE: a copy of a base image costs its full size in time and disk for every VM.
    await copyFile(file.hostPath, target, constants.COPYFILE_FICLONE);
  }
  if (file.chownToJailUser) await chown(target, uid, gid);
}

/**
 * Prepares the jail for `spec` and plans a jailer process that execs Firecracker in it.
 * Each of `files` is placed in the jail root under its name.
 */
export async function prepareJailedLaunch(
  spec: VmSpec,
  firecrackerPath: string,
  jailer: JailerOptions,
  files: JailFile[],
): Promise<LaunchPlan> {
  if (!JAILER_ID.test(spec.vmId)) {
    throw new FirecrackerError(
      'firecracker_invalid_config',
      `The jailer needs a VM id of letters, digits and hyphens, at most 64 long; got ` +
        `${JSON.stringify(spec.vmId)}.`,
    );
  }

  const jailerBinary = await findExecutable(jailer.jailerPath ?? 'jailer');
  if (!jailerBinary) {
    throw new FirecrackerError(
      'firecracker_spawn_failed',
      `No ${jailer.jailerPath ?? 'jailer'} executable was found. Install Firecracker's jailer ` +
        'or set the jailer path.',
    );
  }
  const execFile = await findExecutable(firecrackerPath);
  if (!execFile) {
    throw new FirecrackerError(
      'firecracker_spawn_failed',
      `No ${firecrackerPath} executable was found for the jailer to run.`,
    );
  }
  if (!basename(execFile).includes('firecracker')) {
    throw new FirecrackerError(
      'firecracker_invalid_config',
      `The jailer only runs binaries whose file name contains "firecracker"; got ${execFile}.`,
    );
  }

  const chrootBaseDir = jailer.chrootBaseDir ?? join(spec.runDir, 'jail');
  const jailDir = join(chrootBaseDir, basename(execFile), spec.vmId);
  const jailRoot = join(jailDir, 'root');
  const apiSocketPath = join(jailRoot, API_SOCKET_NAME);
  checkSocketPath(apiSocketPath);
  checkSocketPath(join(jailRoot, VSOCK_SOCKET_NAME));

  await mkdir(spec.runDir, { recursive: true });
  await rm(jailDir, { recursive: true, force: true });
  await mkdir(jailRoot, { recursive: true });
  try {
    for (const file of files) await placeInJail(file, jailRoot, jailer.uid, jailer.gid);
  } catch (error) {
    await rm(jailDir, { recursive: true, force: true });
    throw error;
  }

  const args = [
    '--id',
    spec.vmId,
    '--exec-file',
    execFile,
    '--uid',
    String(jailer.uid),
    '--gid',
    String(jailer.gid),
    '--chroot-base-dir',
    chrootBaseDir,
  ];
  if (jailer.cgroupVersion) args.push('--cgroup-version', String(jailer.cgroupVersion));
  for (const setting of jailer.cgroups ?? []) args.push('--cgroup', setting);
  if (jailer.netns) args.push('--netns', jailer.netns);
  // The jailer passes --id itself and forwards everything after `--` to Firecracker.
  args.push('--', '--api-sock', `/${API_SOCKET_NAME}`);

  return {
    command: jailerBinary,
    args,
    jailUser: { uid: jailer.uid, gid: jailer.gid },
    hostDir: jailRoot,
    vmmDir: '/',
    apiSocketPath,
    vmmPaths: new Map(files.map((file) => [file.name, `/${file.name}`])),
    // NOTE: the cgroup directories the jailer creates are left behind.
    cleanup: () => rm(jailDir, { recursive: true, force: true }),
  };
}
