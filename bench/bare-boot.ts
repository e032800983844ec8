import { spawn } from 'node:child_process';
import { qemuArguments, type Acceleration } from '../src/vmm/qemu.js';

/**
 * Boots the guest kernel with init=/bin/true and times QEMU from spawn to exit: the kernel
 * panics as soon as its init exits, and panic=-1 with -no-reboot ends QEMU. That is the time
 * to reach init, plus a few milliseconds.
 */
export async function bareBootMs(
  images: { kernelPath: string; rootfsPath: string },
  acceleration: Acceleration,
  runDir: string,
): Promise<number> {
  const args = qemuArguments(
    {
      vmId: 'bare',
      kernelPath: images.kernelPath,
      rootfsPath: images.rootfsPath,
      scratchPath: '/dev/null',
      cpuCount: 1,
      memoryMib: 512,
      runDir,
    },
    acceleration,
  ).map((arg) => arg.replace('init=/usr/lib/hearth/init', 'init=/bin/true'));
  const startedAt = performance.now();
  await new Promise<void>((resolve, reject) => {
    const child = spawn('qemu-system-x86_64', args, { stdio: 'ignore' });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.once('error', reject);
  });
  return performance.now() - startedAt;
}
