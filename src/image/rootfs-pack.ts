import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { StepLog } from './step-log.js';

const BLOCK_BYTES = 4096;
const MIB = 1024 * 1024;
/**
 * Free space added to the measured tree: 25% plus 64 MiB covers ext4 metadata (inode
 * tables, bitmaps, directory blocks). The image is mounted read-only, so nothing else is needed.
 */
const HEADROOM_FRACTION = 0.25;
const HEADROOM_FIXED_BYTES = 64 * MIB;
/** Spare inodes beyond the tree's entries, as a fraction of that count. */
const INODE_HEADROOM_FRACTION = 0.25;

export interface TreeUsage {
  /** Bytes the tree takes in 4 KiB blocks, counting every directory as one block. */
  bytes: number;
  /** Files, directories, links and device nodes, each needing one inode. */
  entries: number;
}

/** Measures a directory tree as ext4 with 4 KiB blocks would store it, without following links. */
export async function measureTree(dir: string): Promise<TreeUsage> {
  const usage: TreeUsage = { bytes: BLOCK_BYTES, entries: 1 };
  const visit = async (path: string): Promise<void> => {
    for (const entry of await readdir(path, { withFileTypes: true })) {
      const child = join(path, entry.name);
      usage.entries += 1;
      if (entry.isDirectory()) {
        usage.bytes += BLOCK_BYTES;
        await visit(child);
      } else {
        const { size } = await lstat(child);
        usage.bytes += Math.ceil(size / BLOCK_BYTES) * BLOCK_BYTES;
      }
    }
  };
  await visit(dir);
  return usage;
}

/** Returns the image size in MiB for a tree: its usage plus headroom, rounded up. */
export function imageSizeMib(usage: TreeUsage): number {
  const bytes = usage.bytes * (1 + HEADROOM_FRACTION) + HEADROOM_FIXED_BYTES;
  return Math.ceil(bytes / MIB);
}

/**
 * Packs `rootDir` into a new ext4 image with mkfs.ext4 -d, which needs no loop mount.
 * Block size and inode count are set explicitly, because for images under 512 MiB mke2fs
 * would otherwise pick 1 KiB blocks. There is no journal and no reserved space, because
 * every VM mounts the image read-only.
 */
export async function packExt4(rootDir: string, imagePath: string, log: StepLog): Promise<void> {
  const usage = await measureTree(rootDir);
  const sizeMib = imageSizeMib(usage);
  const inodes = Math.ceil(usage.entries * (1 + INODE_HEADROOM_FRACTION)) + 1024;
  await log.write(
    `Tree: ${Math.round(usage.bytes / MIB)} MiB in ${usage.entries} entries; ` +
      `image: ${sizeMib} MiB with ${inodes} inodes.`,
  );
  await log.run('mkfs.ext4', [
    '-q',
    '-F',
    '-L',
    'hearth-base',
    '-b',
    String(BLOCK_BYTES),
    '-N',
    String(inodes),
    '-m',
    '0',
    '-O',
    '^has_journal',
    '-d',
    rootDir,
    imagePath,
    `${sizeMib}M`,
  ]);
}
