import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { GuestFile } from './hash.js';
import { discoverDebianMirror } from './mirror.js';
import type { StepContext } from './progress.js';
import { packExt4 } from './rootfs-pack.js';
import {
  GUEST_INSTALL_DIR,
  installGuestFiles,
  preparePythonForPip,
  trimTree,
  writeSystemFiles,
} from './rootfs-tree.js';
import type { StepLog } from './step-log.js';

/** The Debian release the guest runs. */
export const ROOTFS_SUITE = 'bookworm';
/** Installed on top of debootstrap's minbase variant. */
export const ROOTFS_PACKAGES: readonly string[] = [
  'python3',
  'python3-pip',
  'python3-venv',
  'bash',
  'coreutils',
  'procps',
  'curl',
  'ca-certificates',
  'tzdata',
  'iproute2',
  'util-linux',
];
/** Bump when the build steps below change, so cached root filesystems are rebuilt. */
export const ROOTFS_BUILDER_VERSION = 1;
export const ROOTFS_IMAGE_FILE = 'rootfs.ext4';

export interface RootfsBuildOptions {
  guestFiles: readonly GuestFile[];
  /** Scratch space for the unpacked tree (about 300 MB). */
  workDir: string;
  /** Created by the build; receives rootfs.ext4. */
  outputDir: string;
  log: StepLog;
  context: StepContext;
}

/**
 * Builds the guest's root filesystem: Debian from the host's apt mirror via debootstrap,
 * plus the guest agent, packed as an ext4 image that VMs attach read-only. Needs root,
 * because debootstrap installs packages as root and chroots into the tree.
 */
export async function buildRootfs(options: RootfsBuildOptions): Promise<void> {
  const { log, context } = options;
  if (process.getuid?.() !== 0) {
    throw new Error('Building the guest rootfs needs root (debootstrap and chroot). Run as root.');
  }

  const mirror = await discoverDebianMirror(ROOTFS_SUITE);
  context.info(`Debian mirror: ${mirror.uri} (from ${mirror.file})`);
  await log.write(`Debian mirror ${mirror.uri}, from ${mirror.file}`);

  const rootDir = join(options.workDir, 'root');
  context.setStatus(`running debootstrap for ${ROOTFS_SUITE}`);
  await log.run('debootstrap', [
    '--variant=minbase',
    `--include=${ROOTFS_PACKAGES.join(',')}`,
    ROOTFS_SUITE,
    rootDir,
    mirror.uri,
  ]);

  context.setStatus('installing the guest agent');
  await installGuestFiles(rootDir, options.guestFiles);
  // Compile now, because each session starts from a clean overlay and would otherwise
  // compile the agent on every boot.
  await log.run('chroot', [rootDir, '/usr/bin/python3', '-m', 'compileall', '-q', GUEST_INSTALL_DIR]);
  await preparePythonForPip(rootDir);
  await writeSystemFiles(rootDir);
  await trimTree(rootDir);

  context.setStatus('packing the ext4 image');
  await mkdir(options.outputDir);
  await packExt4(rootDir, join(options.outputDir, ROOTFS_IMAGE_FILE), log);
}
