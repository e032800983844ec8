// Builds and finds the guest kernel and rootfs. Each image lives in a cache directory named
// after a hash of its inputs:
//   <home>/images/kernel-<hash>/{vmlinux,config}
//   <home>/images/rootfs-<hash>/rootfs.ext4
// Builds run under <home>/build/ and are renamed into place only when complete. Images
// with other hashes are never deleted automatically.
import { readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { projectRoot } from '../config.js';
import { installAtomically, withBuildDir } from './build-dir.js';
import { kernelHash, readGuestFiles, rootfsHash, type GuestFile } from './hash.js';
import {
  buildKernel,
  KERNEL_BUILDER_VERSION,
  KERNEL_CONFIG_FILE,
  KERNEL_IMAGE_FILE,
  kernelSourceVersion,
} from './kernel.js';
import type { Progress } from './progress.js';
import {
  buildRootfs,
  ROOTFS_BUILDER_VERSION,
  ROOTFS_IMAGE_FILE,
  ROOTFS_PACKAGES,
  ROOTFS_SUITE,
} from './rootfs.js';
import { withStepLog } from './step-log.js';

export { Progress, StepFailedError, type ProgressOptions, type StepContext } from './progress.js';

/** Paths to a built kernel and rootfs, and the input hashes that name their directories. */
export interface GuestImages {
  kernelPath: string;
  rootfsPath: string;
  kernelHash: string;
  rootfsHash: string;
}

export interface EnsureImagesOptions {
  /** The state directory, usually hearthHome(). */
  home: string;
  /** Receives IMAGE_STEP_COUNT steps. */
  progress: Progress;
  /** The checkout that contains image/ and guest/. Defaults to projectRoot(). */
  sourceRoot?: string;
}

/** Number of progress steps that ensureImages adds, for sizing a Progress. */
export const IMAGE_STEP_COUNT = 2;

/**
 * Returns the guest images for the current inputs, building whichever is missing. A build
 * of both takes about 5 minutes on 2 cores, and a run with both cached takes well under a
 * second. Each step writes its command output to <home>/logs/{kernel,rootfs}.log.
 * Throws a StepFailedError that names the step and quotes its log.
 */
export async function ensureImages(options: EnsureImagesOptions): Promise<GuestImages> {
  const home = resolve(options.home);
  const sourceRoot = options.sourceRoot ?? projectRoot();
  const { progress } = options;

  const kernelLog = join(home, 'logs', 'kernel.log');
  const kernel = await progress.step('Building guest kernel', kernelLog, async (context) => {
    const plan = await planKernel(home, sourceRoot);
    if (await isKernelComplete(plan.dir)) {
      context.markCached(plan.dir);
      return plan;
    }
    await withStepLog(kernelLog, (log) =>
      withBuildDir(home, `kernel-${plan.hash}`, async (workDir) => {
        const outputDir = join(workDir, 'output');
        await buildKernel({
          fragmentPath: plan.fragmentPath,
          workDir: join(workDir, 'source'),
          outputDir,
          log,
          context,
        });
        await installAtomically(outputDir, plan.dir);
      }),
    );
    return plan;
  });

  const rootfsLog = join(home, 'logs', 'rootfs.log');
  const rootfs = await progress.step('Building guest rootfs', rootfsLog, async (context) => {
    const plan = await planRootfs(home, sourceRoot);
    if (await isFile(join(plan.dir, ROOTFS_IMAGE_FILE))) {
      context.markCached(plan.dir);
      return plan;
    }
    await withStepLog(rootfsLog, (log) =>
      withBuildDir(home, `rootfs-${plan.hash}`, async (workDir) => {
        const outputDir = join(workDir, 'output');
        await buildRootfs({ guestFiles: plan.guestFiles, workDir, outputDir, log, context });
        await installAtomically(outputDir, plan.dir);
      }),
    );
    return plan;
  });

  return toGuestImages(kernel, rootfs);
}

/**
 * Returns the guest images for the current inputs if both are built, and null otherwise,
 * including when linux-source-6.1 is not installed. Never builds anything.
 */
export async function findImages(
  home: string,
  sourceRoot: string = projectRoot(),
): Promise<GuestImages | null> {
  const resolvedHome = resolve(home);
  let kernel: KernelPlan;
  try {
    kernel = await planKernel(resolvedHome, sourceRoot);
  } catch {
    return null;
  }
  const rootfs = await planRootfs(resolvedHome, sourceRoot);
  const complete =
    (await isKernelComplete(kernel.dir)) && (await isFile(join(rootfs.dir, ROOTFS_IMAGE_FILE)));
  return complete ? toGuestImages(kernel, rootfs) : null;
}

interface KernelPlan {
  hash: string;
  dir: string;
  fragmentPath: string;
}

interface RootfsPlan {
  hash: string;
  dir: string;
  guestFiles: GuestFile[];
}

async function planKernel(home: string, sourceRoot: string): Promise<KernelPlan> {
  const fragmentPath = join(sourceRoot, 'image', 'kernel', 'hearth.config');
  const [fragment, sourceVersion] = await Promise.all([
    readFile(fragmentPath),
    kernelSourceVersion(),
  ]);
  const hash = kernelHash({ fragment, sourceVersion, builderVersion: KERNEL_BUILDER_VERSION });
  return { hash, dir: join(home, 'images', `kernel-${hash}`), fragmentPath };
}

async function planRootfs(home: string, sourceRoot: string): Promise<RootfsPlan> {
  const guestFiles = await readGuestFiles(join(sourceRoot, 'guest'));
  const hash = rootfsHash({
    packages: ROOTFS_PACKAGES,
    suite: ROOTFS_SUITE,
    guestFiles,
    builderVersion: ROOTFS_BUILDER_VERSION,
  });
  return { hash, dir: join(home, 'images', `rootfs-${hash}`), guestFiles };
}

function toGuestImages(kernel: KernelPlan, rootfs: RootfsPlan): GuestImages {
  return {
    kernelPath: join(kernel.dir, KERNEL_IMAGE_FILE),
    rootfsPath: join(rootfs.dir, ROOTFS_IMAGE_FILE),
    kernelHash: kernel.hash,
    rootfsHash: rootfs.hash,
  };
}

async function isKernelComplete(dir: string): Promise<boolean> {
  return (await isFile(join(dir, KERNEL_IMAGE_FILE))) && isFile(join(dir, KERNEL_CONFIG_FILE));
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}
