import { randomBytes } from 'node:crypto';
import { chown, copyFile, mkdir, rename, rm } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';

import type { RunningVm, VmExit } from '../types.js';
import type { FirecrackerApiClient } from './api-client.js';
import { describeExit, type VmmProcess } from './vmm-process.js';
import type { LaunchPlan } from './launch.js';

/** Logger methods the driver calls. A pino logger has them. */
export type DriverLogger = Pick<Logger, 'debug' | 'info' | 'warn'>;

/** Default time in ms that stop() waits for the guest to reset after Ctrl+Alt+Del. */
export const DEFAULT_STOP_GRACE_MS = 2_000;

/** Time in ms the process gets to exit after SIGTERM, before SIGKILL. */
const SIGTERM_GRACE_MS = 1_000;

/** Snapshot file names: no path separators, so a name cannot leave the target directory. */
const SNAPSHOT_NAME = /^[A-Za-z0-9._-]{1,100}$/;

/** A full snapshot of a paused VM, as two files on the host. */
export interface FirecrackerSnapshot {
  /** The microVM state (devices, vCPUs). */
  statePath: string;
  /** The guest memory. */
  memoryPath: string;
  /** The vsock `uds_path` as Firecracker saw it when the snapshot was taken. */
  vsockUdsPath: string;
}

export interface FirecrackerVmParts {
  vmId: string;
  process: VmmProcess;
  plan: LaunchPlan;
  api: FirecrackerApiClient;
  channel: Socket;
  vsockUdsPath: string;
  logger?: DriverLogger;
}

/** A Firecracker VM whose agent channel is connected, with pause, resume and snapshots. */
export class FirecrackerVm implements RunningVm {
  readonly vmId: string;
  readonly pid: number;
  readonly channel: Socket;
  readonly accelerator = 'kvm';
  readonly exited: Promise<VmExit>;
  /** The VM's API client, for endpoints the driver does not wrap. */
  readonly api: FirecrackerApiClient;
  private readonly process: VmmProcess;
  private readonly plan: LaunchPlan;
  private readonly vsockUdsPath: string;
  private readonly logger: DriverLogger | undefined;
  private readonly cleaned: Promise<void>;
  private stopping: Promise<VmExit> | null = null;
  private paused = false;

  constructor(parts: FirecrackerVmParts) {
    this.vmId = parts.vmId;
    this.process = parts.process;
    this.pid = parts.process.pid;
    this.plan = parts.plan;
    this.api = parts.api;
    this.channel = parts.channel;
    this.vsockUdsPath = parts.vsockUdsPath;
    this.logger = parts.logger;
    this.exited = parts.process.exited;
    // Without a listener, a socket error before the caller attaches one would crash the process.
    this.channel.on('error', (error) => {
      this.logger?.debug({ vmId: this.vmId, err: error }, 'agent channel error');
    });
    this.cleaned = this.exited.then(async (exit) => {
      this.channel.destroy();
      await this.plan.cleanup();
      this.logger?.info(
        { vmId: this.vmId, pid: this.pid, exit: describeExit(exit) },
        'firecracker exited',
      );
    });
  }

  /**
   * Stops the VM and removes its sockets (and its jail, when jailed). It sends Ctrl+Alt+Del
   * and waits `graceMs` for the guest to reset, which ends Firecracker because the guest boots
   * with reboot=k. Then it sends SIGTERM, and SIGKILL a second later. Idempotent.
   */
  stop(graceMs = DEFAULT_STOP_GRACE_MS): Promise<VmExit> {
    this.stopping ??= this.stopOnce(graceMs);
    return this.stopping;
  }

  private async stopOnce(graceMs: number): Promise<VmExit> {
    // NOTE: Ctrl+Alt+Del reaches the guest only through an i8042 keyboard driver
    // (CONFIG_SERIO_I8042 and CONFIG_KEYBOARD_ATKBD). Without one, stop() waits out the grace.
    if (!this.process.exitStatus && !this.paused) {
      const sent = await this.api
        .createSyncAction('SendCtrlAltDel', { timeoutMs: Math.max(1, Math.min(graceMs, 1_000)) })
        .then(() => true)
        .catch((error: unknown) => {
          this.logger?.debug({ vmId: this.vmId, err: error }, 'SendCtrlAltDel failed');
          return false;
        });
      if (sent) await this.process.waitForExit(graceMs);
    }
    if (!this.process.exitStatus) {
      this.logger?.info({ vmId: this.vmId, pid: this.pid }, 'terminating firecracker');
    }
    const exit = await this.process.terminate(SIGTERM_GRACE_MS);
    await this.cleaned;
    return exit;
  }

  /** Pauses the vCPUs. Required before createSnapshot(). */
  async pause(): Promise<void> {
    await this.api.patchVmState('Paused');
    this.paused = true;
  }

  async resume(): Promise<void> {
    await this.api.patchVmState('Resumed');
    this.paused = false;
  }

  /**
   * Writes a full snapshot of the paused VM to `<targetDir>/<name>.state` and `.mem`,
   * replacing existing files of those names.
   *
   * Firecracker writes under temporary names that are renamed into place afterwards, so an
   * existing snapshot, even the one a running VM was restored from and maps, stays intact
   * until the new one is complete. A jailed Firecracker writes inside its jail.
   */
  async createSnapshot(targetDir: string, name = 'snapshot'): Promise<FirecrackerSnapshot> {
    if (!SNAPSHOT_NAME.test(name)) {
      throw new TypeError(`Snapshot name ${JSON.stringify(name)} must match ${SNAPSHOT_NAME}.`);
    }
    await mkdir(targetDir, { recursive: true });
    const snapshot: FirecrackerSnapshot = {
      statePath: join(targetDir, `${name}.state`),
      memoryPath: join(targetDir, `${name}.mem`),
      vsockUdsPath: this.vsockUdsPath,
    };
    const workDir = await this.snapshotWorkDir(targetDir);
    const suffix = randomBytes(6).toString('hex');
    const stateName = `.${name}.state.${suffix}`;
    const memoryName = `.${name}.mem.${suffix}`;

    const started = Date.now();
    try {
      await this.api.createSnapshot({
        snapshot_path: join(workDir.vmmDir, stateName),
        mem_file_path: join(workDir.vmmDir, memoryName),
        snapshot_type: 'Full',
      });
      await moveFile(join(workDir.hostDir, stateName), snapshot.statePath);
      await moveFile(join(workDir.hostDir, memoryName), snapshot.memoryPath);
    } finally {
      await Promise.allSettled([
        rm(join(workDir.hostDir, stateName), { force: true }),
        rm(join(workDir.hostDir, memoryName), { force: true }),
      ]);
    }
    this.logger?.info(
      { vmId: this.vmId, durationMs: Date.now() - started, statePath: snapshot.statePath },
      'snapshot created',
    );
    return snapshot;
  }

  /** Returns where Firecracker writes snapshot files, on the host and in its own view. */
  private async snapshotWorkDir(targetDir: string) {
    const jailUser = this.plan.jailUser;
    if (!jailUser) return { hostDir: targetDir, vmmDir: targetDir };

    const hostDir = join(this.plan.hostDir, 'snapshot-work');
    await mkdir(hostDir, { recursive: true });
    await chown(hostDir, jailUser.uid, jailUser.gid);
    return { hostDir, vmmDir: join(this.plan.vmmDir, 'snapshot-work') };
  }
}

/** Renames `from` over `to`, copying first when they are on different filesystems. */
async function moveFile(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EXDEV') throw error;
    // Copying straight over `to` would truncate a file that a running VM may map.
    const partial = `${to}.partial-${randomBytes(6).toString('hex')}`;
    await copyFile(from, partial);
    await rename(partial, to);
    await rm(from, { force: true });
  }
}
