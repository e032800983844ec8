import { execFile } from 'node:child_process';
import { access, mkdir, readdir, readFile, rename } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { formatConfigMismatches, verifyKernelConfig } from './kernel-config.js';
import type { StepContext } from './progress.js';
import type { StepLog } from './step-log.js';

const execFileAsync = promisify(execFile);

export const KERNEL_SOURCE_PACKAGE = 'linux-source-6.1';
export const KERNEL_SOURCE_TARBALL = '/usr/src/linux-source-6.1.tar.xz';
/** Bump when the build steps below change, so cached kernels are rebuilt. */
export const KERNEL_BUILDER_VERSION = 1;

/** File names inside a kernel cache directory. */
export const KERNEL_IMAGE_FILE = 'vmlinux';
export const KERNEL_CONFIG_FILE = 'config';

/**
 * Returns the installed version of Debian's kernel source package. Throws when the package
 * is not installed, with the command that installs it.
 */
export async function kernelSourceVersion(): Promise<string> {
  try {
    const { stdout } = await execFileAsync('dpkg-query', [
      '--show',
      '--showformat=${Version}',
      KERNEL_SOURCE_PACKAGE,
    ]);
    if (stdout.trim() !== '') {
      return stdout.trim();
    }
  } catch {
    // Handled below: dpkg-query fails when the package is unknown.
  }
  throw new Error(
    `The Debian package ${KERNEL_SOURCE_PACKAGE} is not installed. ` +
      `Run ./setup.sh, or apt-get install ${KERNEL_SOURCE_PACKAGE}.`,
  );
}

export interface KernelBuildOptions {
  fragmentPath: string;
  /** Scratch space for the unpacked source tree (about 1.5 GB once built). */
  workDir: string;
  /** Created by the build; receives vmlinux and config. */
  outputDir: string;
  log: StepLog;
  context: StepContext;
}

/**
 * Builds an uncompressed vmlinux from Debian's kernel source: tinyconfig, with the hearth
 * fragment merged on top. Fails before compiling if any option of the fragment did not
 * survive `make olddefconfig`, because Kconfig drops options whose dependencies are off
 * without saying so.
 */
export async function buildKernel(options: KernelBuildOptions): Promise<void> {
  const { log, context } = options;
  await access(KERNEL_SOURCE_TARBALL).catch(() => {
    throw new Error(
      `${KERNEL_SOURCE_TARBALL} is missing. Reinstall ${KERNEL_SOURCE_PACKAGE} ` +
        `(apt-get install --reinstall ${KERNEL_SOURCE_PACKAGE}).`,
    );
  });

  context.setStatus('unpacking the kernel source');
  await mkdir(options.workDir, { recursive: true });
  await log.run('tar', ['-x', '-f', KERNEL_SOURCE_TARBALL, '-C', options.workDir]);
  const sourceDir = await findSourceDir(options.workDir);
  // Fixed names, so that the host's user and host name do not end up in the guest's uname -v.
  const env = { KBUILD_BUILD_USER: 'hearth', KBUILD_BUILD_HOST: 'hearth' };

  context.setStatus('configuring');
  await log.run('make', ['tinyconfig'], { cwd: sourceDir, env });
  await log.run('scripts/kconfig/merge_config.sh', ['-m', '.config', options.fragmentPath], {
    cwd: sourceDir,
    env,
  });
  await log.run('make', ['olddefconfig'], { cwd: sourceDir, env });
  await checkConfig(options.fragmentPath, join(sourceDir, '.config'), log);

  const jobs = availableParallelism();
  context.setStatus(`compiling vmlinux with ${jobs} jobs`);
  await log.run('make', [`-j${jobs}`, 'vmlinux'], { cwd: sourceDir, env });

  await mkdir(options.outputDir);
  await rename(join(sourceDir, 'vmlinux'), join(options.outputDir, KERNEL_IMAGE_FILE));
  await rename(join(sourceDir, '.config'), join(options.outputDir, KERNEL_CONFIG_FILE));
}

async function checkConfig(fragmentPath: string, configPath: string, log: StepLog): Promise<void> {
  const [fragment, final] = await Promise.all([
    readFile(fragmentPath, 'utf8'),
    readFile(configPath, 'utf8'),
  ]);
  const mismatches = verifyKernelConfig(fragment, final);
  if (mismatches.length === 0) {
    await log.write('All options of the fragment are in the final .config.');
    return;
  }
  const list = formatConfigMismatches(mismatches);
  await log.write(`Options of the fragment missing from the final .config:\n${list}`);
  throw new Error(
    `${mismatches.length} option(s) of ${fragmentPath} lost their values in make olddefconfig. ` +
      `Typical causes are an option they depend on that is off (add it to the fragment) ` +
      `or a value outside the option's range:\n${list}`,
  );
}

async function findSourceDir(workDir: string): Promise<string> {
  const entries = await readdir(workDir, { withFileTypes: true });
  const dirs = entries.filter((entry) => entry.isDirectory());
  if (dirs.length !== 1 || dirs[0] === undefined) {
    throw new Error(
      `Expected ${KERNEL_SOURCE_TARBALL} to unpack into one directory, found ` +
        `${dirs.length}: ${dirs.map((entry) => entry.name).join(', ')}.`,
    );
  }
  return join(workDir, dirs[0].name);
}
