import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import type { VmmDriver, VmSpec } from '../types.js';
import { FirecrackerApiClient } from './api-client.js';
import type { SnapshotLoadParams } from './api-types.js';
import { FirecrackerApiError, FirecrackerError } from './errors.js';
import { connectHybridVsock } from './hybrid-vsock.js';
import {
  planDirectLaunch,
  prepareJailedLaunch,
  VSOCK_SOCKET_NAME,
  type JailerOptions,
  type JailFile,
  type LaunchPlan,
} from './launch.js';
import { FirecrackerVm, type DriverLogger, type FirecrackerSnapshot } from './vm.js';
import { VmmProcess } from './vmm-process.js';

/** The vsock port the guest agent listens on. The guest reads it from hearth.channel. */
export const AGENT_VSOCK_PORT = 1024;

/** CIDs 0 to 2 are reserved by the vsock address family, so the one guest gets 3. */
const GUEST_CID = 3;

/** Firecracker normally creates its API socket within milliseconds of starting. */
export const DEFAULT_API_SOCKET_TIMEOUT_MS = 5_000;

/**
 * An estimate: on KVM the agent listens about a second after boot, and a cold page cache
 * can make the first python3 start several times slower.
 */
export const DEFAULT_BOOT_TIMEOUT_MS = 20_000;

/** Firecracker accepts 1 to 32 vCPUs. */
const MAX_VCPUS = 32;

export interface FirecrackerDriverOptions {
  /** The firecracker binary's name (looked up on PATH) or path. Default `firecracker`. */
  firecrackerPath?: string;
  /** Runs Firecracker through the jailer (chroot, uid and gid drop, cgroups) when set. */
  jailer?: JailerOptions;
  /** Guest vsock port of the agent. Default AGENT_VSOCK_PORT. */
  agentPort?: number;
  /** Timeout of each API request in ms. Default DEFAULT_API_TIMEOUT_MS. */
  apiTimeoutMs?: number;
  /** Maximum time in ms from spawn until the API responds. Default DEFAULT_API_SOCKET_TIMEOUT_MS. */
  apiSocketTimeoutMs?: number;
  /** Time in ms from InstanceStart to an agent connection. Default DEFAULT_BOOT_TIMEOUT_MS. */
  bootTimeoutMs?: number;
  /** Receives starts, stops and errors. Silent by default. */
  logger?: DriverLogger;
}

/** A VmSpec with the network settings only Firecracker takes. */
export interface FirecrackerVmSpec extends VmSpec {
  /** A host TAP device to attach as the guest's eth0. No network device when absent. */
  tapDevice?: string;
  /** The guest's MAC address on eth0, e.g. 06:00:ac:10:00:02. Firecracker picks one if unset. */
  guestMac?: string;
}

/** Returns the kernel command line for a hearth guest under Firecracker. */
export function firecrackerBootArgs(agentPort = AGENT_VSOCK_PORT): string {
  return [
    // The console log captures the serial console.
    'console=ttyS0',
    // Firecracker exits when the guest resets through the i8042 controller, so a guest
    // reboot, a panic and the agent's shutdown all end the VM.
    'reboot=k',
    'panic=-1',
    // Firecracker's devices are virtio-mmio.
    'pci=off',
    'root=/dev/vda',
    'ro',
    'rootfstype=ext4',
    'init=/usr/lib/hearth/init',
    `hearth.channel=vsock:${agentPort}`,
  ].join(' ');
}

/** Boots hearth guests with Firecracker, configured over its API socket. Needs a working KVM. */
export class FirecrackerDriver implements VmmDriver {
  readonly name = 'firecracker' as const;
  private readonly options: FirecrackerDriverOptions;

  constructor(options: FirecrackerDriverOptions = {}) {
    this.options = options;
  }

  /**
   * Boots a VM: it configures machine, kernel, drives, network and vsock, starts the
   * instance and connects to the agent. On any failure it kills Firecracker, removes the
   * sockets and rethrows.
   */
  async start(spec: FirecrackerVmSpec): Promise<FirecrackerVm> {
    validateSpec(spec);
    const files: JailFile[] = [
      { name: 'vmlinux', hostPath: spec.kernelPath, mode: 'link-or-copy' },
      { name: 'rootfs.ext4', hostPath: spec.rootfsPath, mode: 'link-or-copy' },
      { name: 'scratch.ext4', hostPath: spec.scratchPath, mode: 'link', chownToJailUser: true },
    ];

    return this.launch(spec, files, async (api, plan, vsockUdsPath) => {
      const inVmm = (name: string) => plan.vmmPaths.get(name) as string;
      await api.putMachineConfig({ vcpu_count: spec.cpuCount, mem_size_mib: spec.memoryMib });
      await api.putBootSource({
        kernel_image_path: inVmm('vmlinux'),
        boot_args: [firecrackerBootArgs(this.agentPort), ...(spec.network?.kernelArgs ?? [])].join(
          ' ',
        ),
      });
      await api.putDrive({
        drive_id: 'rootfs',
        path_on_host: inVmm('rootfs.ext4'),
        is_root_device: true,
        is_read_only: true,
      });
      await api.putDrive({
        drive_id: 'scratch',
        path_on_host: inVmm('scratch.ext4'),
        is_root_device: false,
        is_read_only: false,
      });
      const tapDevice = spec.tapDevice ?? spec.network?.tapDevice;
      const guestMac = spec.guestMac ?? spec.network?.macAddress;
      if (tapDevice) {
        await api.putNetworkInterface({
          iface_id: 'eth0',
          host_dev_name: tapDevice,
          ...(guestMac ? { guest_mac: guestMac } : {}),
        });
      }
      await api.putVsock({ guest_cid: GUEST_CID, uds_path: vsockUdsPath });
      await api.createSyncAction('InstanceStart');
    });
  }

  /**
   * Starts a new Firecracker process from a snapshot, resumes it and connects to the agent.
   *
   * Firecracker reopens the drives at the paths they had when the snapshot was taken. Under
   * the jailer those are names in the jail, so the restored VM uses `spec.rootfsPath` and
   * `spec.scratchPath`. Without the jailer it reuses the original host paths.
   */
  async restore(spec: FirecrackerVmSpec, snapshot: FirecrackerSnapshot): Promise<FirecrackerVm> {
    validateSpec(spec);
    // NOTE: without the jailer, restoring while the snapshotted VM still runs makes both
    // VMs write to the same scratch disk.
    const files: JailFile[] = [
      { name: 'rootfs.ext4', hostPath: spec.rootfsPath, mode: 'link-or-copy' },
      { name: 'scratch.ext4', hostPath: spec.scratchPath, mode: 'link', chownToJailUser: true },
      { name: 'snapshot.state', hostPath: snapshot.statePath, mode: 'link-or-copy' },
      { name: 'snapshot.mem', hostPath: snapshot.memoryPath, mode: 'link-or-copy' },
    ];

    return this.launch(spec, files, async (api, plan, vsockUdsPath) => {
      const params: SnapshotLoadParams = {
        snapshot_path: plan.vmmPaths.get('snapshot.state') as string,
        mem_backend: {
          backend_type: 'File',
          backend_path: plan.vmmPaths.get('snapshot.mem') as string,
        },
        resume_vm: true,
      };
      // Sent only when the path changes, because releases older than this API may reject it.
      if (vsockUdsPath !== snapshot.vsockUdsPath)
        params.vsock_override = { uds_path: vsockUdsPath };
      if (spec.tapDevice) {
        params.network_overrides = [{ iface_id: 'eth0', host_dev_name: spec.tapDevice }];
      }
      await api.loadSnapshot(params);
    });
  }

  private get agentPort(): number {
    return this.options.agentPort ?? AGENT_VSOCK_PORT;
  }

  private async launch(
    spec: FirecrackerVmSpec,
    files: JailFile[],
    configure: (api: FirecrackerApiClient, plan: LaunchPlan, vsockUdsPath: string) => Promise<void>,
  ): Promise<FirecrackerVm> {
    const started = Date.now();
    const firecrackerPath = this.options.firecrackerPath ?? 'firecracker';
    const plan = this.options.jailer
      ? await prepareJailedLaunch(spec, firecrackerPath, this.options.jailer, files)
      : await planDirectLaunch(spec, firecrackerPath, files);

    let vmmProcess: VmmProcess;
    try {
      vmmProcess = await VmmProcess.spawn(
        plan.command,
        plan.args,
        join(spec.runDir, 'firecracker.log'),
      );
    } catch (error) {
      await plan.cleanup();
      throw error;
    }

    const logger = this.options.logger;
    try {
      const api = new FirecrackerApiClient({
        socketPath: plan.apiSocketPath,
        timeoutMs: this.options.apiTimeoutMs,
      });
      await this.waitForApi(api, vmmProcess, plan.apiSocketPath);

      const vsockUdsPath = join(plan.vmmDir, VSOCK_SOCKET_NAME);
      await configure(api, plan, vsockUdsPath);

      const { socket } = await connectHybridVsock({
        udsPath: join(plan.hostDir, VSOCK_SOCKET_NAME),
        port: this.agentPort,
        timeoutMs: this.options.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS,
        signal: vmmProcess.exitSignal,
      });

      logger?.info(
        {
          vmId: spec.vmId,
          pid: vmmProcess.pid,
          jailed: plan.jailUser !== null,
          durationMs: Date.now() - started,
        },
        'firecracker VM started',
      );
      return new FirecrackerVm({
        vmId: spec.vmId,
        process: vmmProcess,
        plan,
        api,
        channel: socket,
        vsockUdsPath,
        logger,
      });
    } catch (error) {
      const failure = await explainFailure(error, vmmProcess);
      logger?.warn(
        { vmId: spec.vmId, pid: vmmProcess.pid, err: failure },
        'firecracker VM failed to start',
      );
      await vmmProcess.terminate(0);
      await plan.cleanup();
      throw failure;
    }
  }

  /** Polls GET /version until Firecracker responds, exits, or the timeout passes. */
  private async waitForApi(
    api: FirecrackerApiClient,
    vmmProcess: VmmProcess,
    socketPath: string,
  ): Promise<void> {
    const timeoutMs = this.options.apiSocketTimeoutMs ?? DEFAULT_API_SOCKET_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      vmmProcess.exitSignal.throwIfAborted();
      try {
        await api.getVersion({ timeoutMs: Math.max(1, deadline - Date.now()) });
        return;
      } catch (error) {
        const retryable =
          error instanceof FirecrackerError && error.code === 'firecracker_unreachable';
        if (!retryable) throw error;
      }
      if (Date.now() >= deadline) {
        throw new FirecrackerError(
          'firecracker_timeout',
          `Firecracker's API socket ${socketPath} did not answer within ${timeoutMs} ms ` +
            `of starting. Its console log is ${vmmProcess.consoleLogPath}.`,
        );
      }
      await sleep(10);
    }
  }
}

function validateSpec(spec: VmSpec): void {
  if (!Number.isInteger(spec.cpuCount) || spec.cpuCount < 1 || spec.cpuCount > MAX_VCPUS) {
    throw new FirecrackerError(
      'firecracker_invalid_config',
      `Firecracker needs a whole number of vCPUs from 1 to ${MAX_VCPUS}; got ${spec.cpuCount}.`,
    );
  }
  if (!Number.isInteger(spec.memoryMib) || spec.memoryMib < 1) {
    throw new FirecrackerError(
      'firecracker_invalid_config',
      `Firecracker needs a whole, positive memory size in MiB; got ${spec.memoryMib}.`,
    );
  }
}

/**
 * Turns a start failure into the error to report. When Firecracker exited first, the exit
 * is the cause and the connection error a symptom, unless Firecracker returned a fault.
 */
async function explainFailure(error: unknown, vmmProcess: VmmProcess): Promise<unknown> {
  if (error instanceof FirecrackerApiError) return error;
  // A dropped connection often arrives just before the exit event.
  await vmmProcess.waitForExit(50);
  if (!vmmProcess.exitStatus) return error;
  const exited = vmmProcess.exitSignal.reason as FirecrackerError;
  if (error === exited) return error;
  return new FirecrackerError('firecracker_exited', exited.message, { cause: error });
}
