import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { release } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { bootVm, type VmImages } from '../sessions/vm.js';
import { QemuDriver, type Acceleration } from './qemu.js';

const execFileAsync = promisify(execFile);

// A KVM guest of this size reaches its agent in well under 5 s; a KVM that cannot run the
// guest kernel (a paravirtual or nested KVM without full support) hangs or reports an
// emulation failure instead, so a trial boot that misses this deadline means TCG.
const KVM_PROBE_TIMEOUT_MS = 20_000;

export interface ProbeOptions {
  home: string;
  images: VmImages & { kernelHash: string; rootfsHash: string };
  /** "kvm" or "tcg" forces a choice without probing; "auto" or unset probes. */
  override?: string;
}

/**
 * Picks KVM when a trial boot of the real guest under KVM reaches the agent, and TCG
 * otherwise. The existence of /dev/kvm proves nothing: some hosts expose a KVM that cannot
 * boot a Linux kernel. The verdict is cached per guest kernel, QEMU version and host kernel.
 */
export async function chooseAcceleration(options: ProbeOptions): Promise<Acceleration> {
  const tscKhz = await hostTscKhz();
  if (options.override === 'tcg') {
    return { accelerator: 'tcg', reason: 'HEARTH_ACCEL=tcg was set', tscKhz };
  }
  if (options.override === 'kvm') {
    return { accelerator: 'kvm', reason: 'HEARTH_ACCEL=kvm was set' };
  }

  const cachePath = join(options.home, 'accel.json');
  const key = await probeKey(options.images);
  const cached = await readCachedVerdict(cachePath, key);
  if (cached) return { ...cached, tscKhz: cached.accelerator === 'tcg' ? tscKhz : undefined };

  const verdict = await probeKvm(options.home, options.images);
  const acceleration: Acceleration = verdict.usable
    ? { accelerator: 'kvm', reason: verdict.reason }
    : { accelerator: 'tcg', reason: verdict.reason, tscKhz };
  await mkdir(dirname(cachePath), { recursive: true });
  await writeFile(
    cachePath,
    JSON.stringify({ key, accelerator: acceleration.accelerator, reason: verdict.reason }),
  );
  return acceleration;
}

export async function probeKvm(
  home: string,
  images: VmImages,
): Promise<{ usable: boolean; reason: string }> {
  try {
    await access('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return { usable: false, reason: '/dev/kvm is missing or not accessible, so QEMU uses TCG' };
  }
  const driver = new QemuDriver({
    acceleration: { accelerator: 'kvm', reason: 'probe' },
  });
  try {
    const booted = await bootVm(driver, images, {
      cpuCount: 1,
      memoryMib: 256,
      diskMib: 64,
      env: {},
      runRoot: join(home, 'run', 'probe'),
      logDir: join(home, 'logs'),
      bootTimeoutMs: KVM_PROBE_TIMEOUT_MS,
    });
    await booted.destroy();
    return { usable: true, reason: 'a trial boot under KVM reached the guest agent' };
  } catch (error) {
    return {
      usable: false,
      reason:
        '/dev/kvm exists but a trial boot under KVM failed, so QEMU uses TCG ' +
        `(${(error as Error).message})`,
    };
  }
}

/** Keys the cached verdict. Whether KVM can run the guest depends on the guest kernel, QEMU
 * and the host, not on the root filesystem, so a rootfs rebuild keeps the verdict. */
async function probeKey(images: { kernelHash: string }): Promise<string> {
  const { stdout } = await execFileAsync('qemu-system-x86_64', ['--version']);
  return createHash('sha256')
    .update([images.kernelHash, stdout.split('\n')[0], release()].join('\n'))
    .digest('hex');
}

async function readCachedVerdict(
  path: string,
  key: string,
): Promise<Omit<Acceleration, 'tscKhz'> | null> {
  try {
    const cached = JSON.parse(await readFile(path, 'utf8')) as {
      key: string;
      accelerator: 'kvm' | 'tcg';
      reason: string;
    };
    if (cached.key !== key) return null;
    return { accelerator: cached.accelerator, reason: `${cached.reason} (cached probe)` };
  } catch {
    return null;
  }
}

/**
 * Reads the host CPU's rate from /proc/cpuinfo, in kHz.
 * NOTE: "cpu MHz" is the TSC rate on hosts with an invariant TSC (virtual machines and
 * current x86 servers); on a host that scales its clock it is only an estimate, and guest
 * timings scale with the error.
 */
export async function hostTscKhz(): Promise<number | undefined> {
  try {
    const cpuinfo = await readFile('/proc/cpuinfo', 'utf8');
    const match = /^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo);
    return match ? Math.round(Number(match[1]) * 1000) : undefined;
  } catch {
    return undefined;
  }
}
