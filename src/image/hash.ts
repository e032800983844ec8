import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

/** Hex digits kept from the SHA-256 in image directory names: 64 bits, ample for a cache key. */
const HASH_HEX_LENGTH = 16;

/** A file copied into the guest image. */
export interface GuestFile {
  /** Path relative to the guest/ directory, with "/" separators. */
  path: string;
  data: Buffer;
  executable: boolean;
}

export interface KernelInputs {
  /** The bytes of the Kconfig fragment. */
  fragment: Buffer;
  /** The installed version of Debian's linux-source package, e.g. "6.1.192-3". */
  sourceVersion: string;
  builderVersion: number;
}

export interface RootfsInputs {
  packages: readonly string[];
  suite: string;
  guestFiles: readonly GuestFile[];
  builderVersion: number;
}

/**
 * Hashes named fields with SHA-256. Each name and value is length-prefixed, so that no two
 * different field lists produce the same byte stream. Returns the first 16 hex digits.
 */
export function hashFields(fields: ReadonlyArray<readonly [string, string | Buffer]>): string {
  const hash = createHash('sha256');
  for (const [name, value] of fields) {
    const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
    hash.update(`${name.length}:${name}:${bytes.length}:`);
    hash.update(bytes);
  }
  return hash.digest('hex').slice(0, HASH_HEX_LENGTH);
}

export function kernelHash(inputs: KernelInputs): string {
  return hashFields([
    ['builder', String(inputs.builderVersion)],
    ['source', inputs.sourceVersion],
    ['fragment', inputs.fragment],
  ]);
}

/** Hashes what decides the rootfs content. The mirror is left out: any mirror serves the same suite. */
export function rootfsHash(inputs: RootfsInputs): string {
  const fields: Array<[string, string | Buffer]> = [
    ['builder', String(inputs.builderVersion)],
    ['suite', inputs.suite],
    ['packages', [...inputs.packages].sort().join(',')],
  ];
  for (const file of [...inputs.guestFiles].sort((a, b) => compareStrings(a.path, b.path))) {
    fields.push([`file${file.executable ? '+x' : ''}`, file.path]);
    fields.push(['data', file.data]);
  }
  return hashFields(fields);
}

/**
 * Reads every regular file under `dir`, sorted by path. Python bytecode caches
 * (__pycache__ directories and .pyc files) are skipped, because the build makes its own.
 */
export async function readGuestFiles(dir: string): Promise<GuestFile[]> {
  const files: GuestFile[] = [];
  const visit = async (subdir: string): Promise<void> => {
    for (const entry of await readdir(join(dir, subdir), { withFileTypes: true })) {
      const path = subdir === '' ? entry.name : `${subdir}/${entry.name}`;
      if (entry.name === '__pycache__' || entry.name.endsWith('.pyc')) {
        continue;
      }
      if (entry.isDirectory()) {
        await visit(path);
      } else if (entry.isFile()) {
        const fullPath = join(dir, path);
        const [data, info] = await Promise.all([readFile(fullPath), stat(fullPath)]);
        files.push({ path, data, executable: (info.mode & 0o111) !== 0 });
      }
    }
  };
  await visit('');
  return files.sort((a, b) => compareStrings(a.path, b.path));
}

/** Orders by UTF-16 code units, which unlike localeCompare does not depend on the host locale. */
function compareStrings(a: string, b: string): number {
  if (a < b) {
    return -1;
  }
  return a > b ? 1 : 0;
}
