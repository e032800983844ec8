import { spawn } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { HearthError } from '../errors.js';
import type { RunningVm, VmExit, VmSpec, VmmDriver } from './types.js';

/** How the VMs of one hearthd run: the accelerator picked by the probe, and why. */
export interface Acceleration {
  accelerator: 'kvm' | 'tcg';
  reason: string;
  /** Host TSC rate in kHz, passed to TCG guests whose own calibration is unreliable. */
  tscKhz?: number;
}

export interface QemuDriverOptions {
  acceleration: Acceleration;
  qemuPath?: string;
  /** How long QEMU may take to create the agent socket. */
  socketTimeoutMs?: number;
}

export const AGENT_PORT_NAME = 'hearth.agent';
// QEMU creates its listening socket within milliseconds of starting; a slow disk or a loaded
// host can stretch that, but 10 s without it means QEMU failed.
const DEFAULT_SOCKET_TIMEOUT_MS = 10_000;
// TCG keeps translated code in a cache that is mapped up front; 256 MiB holds a Python
// workload's hot code, where QEMU 7.2's default of 1 GiB mostly adds host memory per VM.
const TCG_TRANSLATION_CACHE_MIB = 256;
const DEFAULT_STOP_GRACE_MS = 3_000;

export function kernelCommandLine(acceleration: Acceleration, extraArgs: string[] = []): string {
  const args = [
    'console=ttyS0',
    'root=/dev/vda',
    'ro',
    'rootfstype=ext4',
    'init=/usr/lib/hearth/init',
    'panic=-1',
    'reboot=t',
    `hearth.channel=serial:${AGENT_PORT_NAME}`,
    'quiet',
  ];
  if (acceleration.accelerator === 'tcg') {
    // Under TCG the guest cannot calibrate its TSC against the emulated PIT reliably and
    // falls back to the 10 ms jiffies clock. TCG's TSC is the host's, so its rate is known.
    args.push('tsc=reliable');
    if (acceleration.tscKhz) args.push(`tsc_early_khz=${acceleration.tscKhz}`);
  }
  args.push(...extraArgs);
  return args.join(' ');
}

export function qemuArguments(spec: VmSpec, acceleration: Acceleration): string[] {
  const accel =
    acceleration.accelerator === 'kvm'
      ? ['-accel', 'kvm', '-cpu', 'host']
      : ['-accel', `tcg,thread=multi,tb-size=${TCG_TRANSLATION_CACHE_MIB}`, '-cpu', 'max'];
  const network = spec.network
    ? [
        '-netdev',
        `tap,id=net0,ifname=${spec.network.tapDevice},script=no,downscript=no`,
        '-device',
        `virtio-net-device,netdev=net0,mac=${spec.network.macAddress}`,
      ]
    : [];
  return [
    '-M',
    'microvm,x-option-roms=off,rtc=on,acpi=off',
    ...accel,
    '-smp',
    String(spec.cpuCount),
    '-m',
    `${spec.memoryMib}M`,
    '-nodefaults',
    '-no-user-config',
    '-nographic',
    '-no-reboot',
    '-kernel',
    spec.kernelPath,
    '-append',
    kernelCommandLine(acceleration, spec.network?.kernelArgs),
    '-drive',
    `id=base,file=${spec.rootfsPath},format=raw,if=none,readonly=on`,
    '-device',
    'virtio-blk-device,drive=base',
    '-drive',
    `id=scratch,file=${spec.scratchPath},format=raw,if=none,discard=unmap,detect-zeroes=unmap`,
    '-device',
    'virtio-blk-device,drive=scratch',
    '-device',
    'virtio-rng-device',
    '-device',
    'virtio-serial-device',
    '-chardev',
    `socket,id=agent,path=${agentSocketPath(spec)},server=on,wait=off`,
    '-device',
    `virtserialport,chardev=agent,name=${AGENT_PORT_NAME}`,
    ...network,
    '-serial',
    `file:${join(spec.runDir, 'console.log')}`,
  ];
}

export function agentSocketPath(spec: VmSpec): string {
  return join(spec.runDir, 'agent.sock');
}

export class QemuDriver implements VmmDriver {
  readonly name = 'qemu';

  constructor(private readonly options: QemuDriverOptions) {}

  async start(spec: VmSpec): Promise<RunningVm> {
    await mkdir(spec.runDir, { recursive: true });
    const logFd = openSync(join(spec.runDir, 'qemu.log'), 'w');
    const child = spawn(
      this.options.qemuPath ?? 'qemu-system-x86_64',
      qemuArguments(spec, this.options.acceleration),
      { stdio: ['ignore', logFd, logFd] },
    );
    closeSync(logFd);
    const exited = new Promise<VmExit>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', () => resolve({ code: null, signal: null }));
    });
    if (child.pid === undefined) {
      await exited;
      throw new HearthError(
        'vm_boot_failed',
        'Could not start qemu-system-x86_64. Run ./setup.sh.',
      );
    }
    await writeFile(join(spec.runDir, 'qemu.pid'), String(child.pid));

    let channel: Socket;
    try {
      channel = await connectWhenListening(
        agentSocketPath(spec),
        exited,
        this.options.socketTimeoutMs ?? DEFAULT_SOCKET_TIMEOUT_MS,
      );
    } catch (error) {
      child.kill('SIGKILL');
      await exited;
      throw error;
    }

    const pid = child.pid;
    let stopping: Promise<VmExit> | null = null;
    return {
      vmId: spec.vmId,
      pid,
      channel,
      accelerator: this.options.acceleration.accelerator,
      exited,
      stop: (graceMs = DEFAULT_STOP_GRACE_MS) => {
        stopping ??= stopProcess(child.pid!, exited, channel, graceMs);
        return stopping;
      },
    };
  }
}

async function stopProcess(
  pid: number,
  exited: Promise<VmExit>,
  channel: Socket,
  graceMs: number,
): Promise<VmExit> {
  channel.destroy();
  // SIGTERM makes QEMU exit at once and cleanly; the guest's state is disposable.
  signalProcess(pid, 'SIGTERM');
  const timer = setTimeout(() => signalProcess(pid, 'SIGKILL'), graceMs);
  const exit = await exited;
  clearTimeout(timer);
  return exit;
}

function signalProcess(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** Connects to QEMU's agent socket as soon as it exists, or fails if QEMU exits first. */
async function connectWhenListening(
  path: string,
  exited: Promise<VmExit>,
  timeoutMs: number,
): Promise<Socket> {
  let qemuExit: VmExit | null = null;
  void exited.then((exit) => (qemuExit = exit));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (qemuExit) {
      const { code, signal } = qemuExit;
      throw new HearthError(
        'vm_boot_failed',
        `QEMU exited before the VM started (code ${code}, signal ${signal}); see its log ` +
          `next to ${path}.`,
      );
    }
    try {
      return await connectOnce(path);
    } catch {
      if (Date.now() > deadline) {
        throw new HearthError(
          'vm_boot_failed',
          `QEMU did not open the agent socket ${path} within ${timeoutMs} ms.`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

function connectOnce(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.removeListener('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** Removes a VM's run directory: its sockets, pid file and logs. */
export async function removeRunDir(runDir: string): Promise<void> {
  await rm(runDir, { recursive: true, force: true });
}
