import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, rename, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { AgentClient, type AgentReady } from '../agent/client.js';
import { HearthError } from '../errors.js';
import { createScratchDisk } from '../storage/scratch.js';
import { removeRunDir, type QemuVmSpec } from '../vmm/qemu.js';
import type { RunningVm, VmmDriver } from '../vmm/types.js';
import type { VmNetwork } from '../network/types.js';

export interface VmImages {
  kernelPath: string;
  rootfsPath: string;
}

export interface BootOptions {
  cpuCount: number;
  memoryMib: number;
  diskMib: number;
  env: Record<string, string>;
  /** The parent of this VM's run directory. */
  runRoot: string;
  /** The directory that keeps the console and QEMU logs of a VM that failed to boot. */
  logDir: string;
  bootTimeoutMs: number;
  /**
   * Gives the VM a network device before it starts. Without it the VM has none. A booted
   * VM reads its settings from the kernel command line. A snapshot template gets none, so
   * its eth0 stays down with no address, and a restored VM gets them in the greeting.
   */
  attachNetwork?: (vmId: string) => Promise<VmNetwork>;
  /** Starts from a snapshot, or makes a snapshot template; QEMU only. */
  snapshot?: {
    /** Guest RAM file: shared for a template, mapped copy-on-write for a restore. */
    memoryFile: { path: string; shared: boolean };
    /** Device state to restore; absent for a template, which boots. */
    statePath?: string;
    /** Scratch disk to copy instead of making a new one, matching the saved guest. */
    scratchTemplate?: string;
    /** A copy of scratchTemplate made ahead of time, moved into place instead of copying. */
    scratchCopy?: string;
    /** The template's scratch disk path, used instead of one in the run directory. */
    scratchPath?: string;
  };
}

/** A VM whose agent has replied, with the time it took to get there. */
export interface BootedVm {
  vm: RunningVm;
  agent: AgentClient;
  ready: AgentReady;
  runDir: string;
  network: VmNetwork | null;
  /** Milliseconds from starting the VMM process to the agent's first reply. */
  bootMs: number;
  /** Stops the VM and removes its run directory and scratch disk. Idempotent. */
  destroy(): Promise<void>;
}

export function newVmId(): string {
  return `vm-${randomBytes(6).toString('hex')}`;
}

export async function bootVm(
  driver: VmmDriver,
  images: VmImages,
  options: BootOptions,
): Promise<BootedVm> {
  const vmId = newVmId();
  const runDir = join(options.runRoot, vmId);
  const scratchPath = options.snapshot?.scratchPath ?? join(runDir, 'scratch.ext4');
  const startedAt = performance.now();
  let vm: RunningVm | null = null;
  let network: VmNetwork | null = null;
  let destroyed: Promise<void> | null = null;
  const destroy = () => {
    destroyed ??= (async () => {
      await vm?.stop();
      await network?.detach();
      await removeRunDir(runDir);
    })();
    return destroyed;
  };

  try {
    await mkdir(runDir, { recursive: true });
    if (options.snapshot?.scratchTemplate) {
      const { scratchCopy, scratchTemplate } = options.snapshot;
      const moved =
        scratchCopy !== undefined &&
        (await rename(scratchCopy, scratchPath).then(
          () => true,
          () => false,
        ));
      if (!moved) await copySparse(scratchTemplate, scratchPath);
    } else {
      await createScratchDisk(scratchPath, options.diskMib);
    }
    if (options.attachNetwork) network = await options.attachNetwork(vmId);
    // A template and its restores keep one command line. A restore never reads it, because
    // its guest kernel is already running.
    const device =
      network && options.snapshot ? { ...network.device, kernelArgs: [] } : network?.device;
    const spec: QemuVmSpec = {
      vmId,
      kernelPath: images.kernelPath,
      rootfsPath: images.rootfsPath,
      scratchPath,
      cpuCount: options.cpuCount,
      memoryMib: options.memoryMib,
      runDir,
      network: device,
      memoryFile: options.snapshot?.memoryFile,
      incomingStatePath: options.snapshot?.statePath,
    };
    vm = await driver.start(spec);
    // Lets a restarted hearthd find and stop this VM's process, whichever driver ran it.
    await writeFile(join(runDir, 'vmm.pid'), String(vm.pid));
    const agent = new AgentClient(vm.channel);
    const restoring = options.snapshot?.statePath !== undefined;
    const ready = await withTimeout(
      agent.hello(options.env, restoring ? network?.guest : undefined),
      options.bootTimeoutMs,
      vm.exited,
      join(options.logDir, `boot-failure-${vmId}-console.log`),
    );
    return {
      vm,
      agent,
      ready,
      runDir,
      network,
      bootMs: performance.now() - startedAt,
      destroy,
    };
  } catch (error) {
    await keepBootLogs(runDir, options.logDir, vmId);
    await destroy();
    throw error;
  }
}

async function keepBootLogs(runDir: string, logDir: string, vmId: string): Promise<void> {
  for (const name of ['console.log', 'qemu.log']) {
    const source = join(runDir, name);
    if (!existsSync(source)) continue;
    await mkdir(logDir, { recursive: true });
    await copyFile(source, join(logDir, `boot-failure-${vmId}-${name}`)).catch(() => undefined);
  }
}

async function withTimeout<T>(
  work: Promise<T>,
  timeoutMs: number,
  exited: Promise<unknown>,
  consoleCopyPath: string,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new HearthError(
            'vm_boot_failed',
            `The VM's agent did not answer within ${timeoutMs} ms; its console log is ` +
              `kept as ${consoleCopyPath}.`,
          ),
        ),
      timeoutMs,
    );
  });
  const died = exited.then(() => {
    throw new HearthError('vm_boot_failed', 'The VM exited while it was booting.');
  });
  try {
    return await Promise.race([work, timeout, died]);
  } finally {
    clearTimeout(timer);
  }
}

const execFileAsync = promisify(execFile);

/** Copies a sparse disk image without filling its holes, so the copy costs what is used. */
export async function copySparse(source: string, target: string): Promise<void> {
  await execFileAsync('cp', ['--sparse=always', source, target]);
}
