import { execFile } from 'node:child_process';
import { rm, truncate, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { HearthError } from '../errors.js';

const execFileAsync = promisify(execFile);

/**
 * Creates a session's scratch disk: a sparse file of the quota's size, formatted as ext4.
 * It takes host disk space only as the guest writes, and its size is the session's disk quota.
 * No journal, because the disk is thrown away with the session and never needs recovery.
 */
export async function createScratchDisk(path: string, sizeMib: number): Promise<void> {
  await writeFile(path, '');
  await truncate(path, sizeMib * 1024 * 1024);
  try {
    await execFileAsync('mkfs.ext4', [
      '-q',
      '-F',
      '-O',
      '^has_journal',
      '-m',
      '0',
      '-E',
      'nodiscard,lazy_itable_init=1',
      '-L',
      'hearth-scratch',
      path,
    ]);
  } catch (error) {
    await rm(path, { force: true });
    throw new HearthError(
      'vm_boot_failed',
      `mkfs.ext4 failed on the scratch disk ${path}: ${(error as Error).message}`,
    );
  }
}
