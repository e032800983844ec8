// Changes made to the debootstrapped tree before it is packed: the agent goes in, pip is
// allowed to install, host-specific files are replaced and documentation is dropped.
import { chmod, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { GuestFile } from './hash.js';

/** Directory of the guest files inside the image; VMs boot with init=/usr/lib/hearth/init. */
export const GUEST_INSTALL_DIR = '/usr/lib/hearth';

/** Copies the guest files into the tree, executable ones with mode 0755, the rest 0644. */
export async function installGuestFiles(
  rootDir: string,
  files: readonly GuestFile[],
): Promise<void> {
  for (const file of files) {
    const target = join(rootDir, GUEST_INSTALL_DIR, file.path);
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, file.data);
    await chmod(target, file.executable ? 0o755 : 0o644);
  }
}

/**
 * Lets `pip install` work for the guest's root user, as it does in a Python container image.
 * Debian marks its Python as externally managed (PEP 668), which makes pip refuse to install
 * outside a venv. Removing the marker lifts that. The dist-packages directory under
 * /usr/local is created now because Python adds it to sys.path only if it exists at startup,
 * and the agent's long-lived interpreter would otherwise not see packages installed later.
 */
export async function preparePythonForPip(rootDir: string): Promise<void> {
  const versions = (await readdir(join(rootDir, 'usr/lib'))).filter((name) =>
    /^python3\.\d+$/.test(name),
  );
  if (versions.length === 0) {
    throw new Error(`No /usr/lib/python3.X directory in the rootfs; was python3 installed?`);
  }
  for (const version of versions) {
    await rm(join(rootDir, 'usr/lib', version, 'EXTERNALLY-MANAGED'), { force: true });
    await mkdir(join(rootDir, 'usr/local/lib', version, 'dist-packages'), { recursive: true });
  }
}

/**
 * Replaces files that debootstrap copied from the host or left unset: host name, hosts,
 * resolv.conf (empty, since the host network layer decides DNS) and the default locale.
 */
export async function writeSystemFiles(rootDir: string): Promise<void> {
  const etc = join(rootDir, 'etc');
  await mkdir(join(etc, 'default'), { recursive: true });
  await replaceFile(join(etc, 'hostname'), 'hearth\n');
  await replaceFile(join(etc, 'hosts'), '127.0.0.1\tlocalhost hearth\n::1\tlocalhost\n');
  await replaceFile(join(etc, 'resolv.conf'), '');
  await replaceFile(join(etc, 'default/locale'), 'LANG=C.UTF-8\n');
}

/**
 * Deletes package lists, downloaded packages and documentation to shrink the image. apt in
 * the guest then needs `apt-get update` before an install, as in Debian's container images.
 */
export async function trimTree(rootDir: string): Promise<void> {
  const emptied = [
    'var/lib/apt/lists',
    'var/cache/apt',
    'usr/share/doc',
    'usr/share/man',
    'usr/share/info',
  ];
  for (const dir of emptied) {
    await rm(join(rootDir, dir), { recursive: true, force: true });
    await mkdir(join(rootDir, dir), { recursive: true });
  }
  // apt expects these to exist.
  await mkdir(join(rootDir, 'var/lib/apt/lists/partial'), { recursive: true });
  await mkdir(join(rootDir, 'var/cache/apt/archives/partial'), { recursive: true });
}

/**
 * Writes a new regular file in place of whatever is at `path`. Deleting first matters:
 * writing through a symlink such as resolv.conf -> /run/... would change the host's file.
 */
async function replaceFile(path: string, content: string): Promise<void> {
  await rm(path, { force: true });
  await writeFile(path, content, { flag: 'wx', mode: 0o644 });
}
