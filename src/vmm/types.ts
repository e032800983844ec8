import type { VmNetworkDevice } from '../network/types.js';
import type { Duplex } from 'node:stream';

/** What a VMM driver needs to boot one VM. Drivers never see sessions. */
export interface VmSpec {
  /** Unique id, used in file and process names. */
  vmId: string;
  kernelPath: string;
  /** Shared base image, attached read-only. */
  rootfsPath: string;
  /** Per-VM sparse ext4 image, attached read-write; the guest stacks it over the base. */
  scratchPath: string;
  cpuCount: number;
  memoryMib: number;
  /** Directory for this VM's sockets and logs; the driver removes nothing outside it. */
  runDir: string;
  /** The VM's network device; without it the VM has no network at all. */
  network?: VmNetworkDevice;
}

export interface VmExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A started VM whose agent channel is connected. */
export interface RunningVm {
  readonly vmId: string;
  readonly pid: number;
  /** Byte stream to the guest agent. */
  readonly channel: Duplex;
  /** Which accelerator ran the VM, e.g. "kvm" or "tcg". */
  readonly accelerator: string;
  /** Resolves when the VMM process exits, for whatever reason. */
  readonly exited: Promise<VmExit>;
  /** Stops the VM: a graceful stop first, then a kill after the grace period. Idempotent. */
  stop(graceMs?: number): Promise<VmExit>;
}

export interface VmmDriver {
  readonly name: 'qemu' | 'firecracker';
  start(spec: VmSpec): Promise<RunningVm>;
}
