import { spawn } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { HearthError } from '../errors.js';
import { pollQmp, QmpClient } from './qmp.js';
import type { RunningVm, VmExit, VmSpec, VmmDriver } from './types.js';

/** The acceleration of one hearthd's VMs: the accelerator the probe picked, and why. */
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

/** A VmSpec with QEMU's snapshot settings. */
export interface QemuVmSpec extends VmSpec {
  /**
   * Backs guest RAM with this file. Shared: the guest's writes reach the file, as a snapshot
   * template needs. Private: the file is mapped copy-on-write, so VMs restored from one
   * snapshot share its unchanged pages and never see each other's writes.
   */
  memoryFile?: { path: string; shared: boolean };
  /** Restores the device state saved in this file instead of booting; RAM comes from
   * memoryFile. */
  incomingStatePath?: string;
}

/** A QEMU VM, which can save its device state for snapshots. */
export interface QemuVm extends RunningVm {
  /**
   * Pauses the VM and writes its device state to statePath. RAM is not written: it is
   * already in the shared memory file. The VM stays paused.
   */
  saveState(statePath: string): Promise<void>;
}

export const AGENT_PORT_NAME = 'hearth.agent';
// Saving or loading device state moves well under a megabyte; 30 s means QEMU is stuck.
const MIGRATION_TIMEOUT_MS = 30_000;
// QEMU creates its listening socket within milliseconds of starting; a slow disk or a loaded
// host can stretch that, but 10 s without it means QEMU failed.
const DEFAULT_SOCKET_TIMEOUT_MS = 10_000;
// How often to try the agent socket. A restore waits on it, so a coarse poll adds latency.
const SOCKET_POLL_MS = 3;
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
    // Without address space randomization, new processes reuse more of QEMU's translated
    // code: a Bash `echo 1` call took 50 ms instead of 150 ms on the development machine.
    // User code is root inside the VM, which is the sandbox, so ASLR there protects little.
    args.push('norandmaps');
  }
  args.push(...extraArgs);
  return args.join(' ');
}

export function qemuArguments(spec: QemuVmSpec, acceleration: Acceleration): string[] {
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
  const memory = spec.memoryFile
    ? [
        '-object',
        `memory-backend-file,id=mem,size=${spec.memoryMib}M,mem-path=${spec.memoryFile.path},` +
          `share=${spec.memoryFile.shared ? 'on' : 'off'}`,
      ]
    : [];
  const machine = `microvm,x-option-roms=off,rtc=on,acpi=off${spec.memoryFile ? ',memory-backend=mem' : ''}`;
  return [
    '-M',
    machine,
    ...memory,
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
    '-device',
    // Free pages go back to the host, so an idle VM holds only the memory it uses.
    'virtio-balloon-device,free-page-reporting=on',
    '-serial',
    `file:${join(spec.runDir, 'console.log')}`,
    '-qmp',
    `unix:${qmpSocketPath(spec)},server=on,wait=off`,
    ...(spec.incomingStatePath ? ['-incoming', 'defer'] : []),
  ];
}

export function qmpSocketPath(spec: VmSpec): string {
  return join(spec.runDir, 'qmp.sock');
}

export function agentSocketPath(spec: VmSpec): string {
  return join(spec.runDir, 'agent.sock');
}

export class QemuDriver implements VmmDriver {
  readonly name = 'qemu';

  constructor(private readonly options: QemuDriverOptions) {}

  async start(spec: QemuVmSpec): Promise<QemuVm> {
    await mkdir(spec.runDir, { recursive: true });
    const logFd = openSync(join(spec.runDir, 'qemu.log'), 'w');
    // A restore reads the device state from an inherited fd, INCOMING_STATE_FD, which
    // spares QEMU the shell and cat that an exec: migration would spawn.
    const stateFd = spec.incomingStatePath ? openSync(spec.incomingStatePath, 'r') : null;
    let child;
    try {
      child = spawn(
        this.options.qemuPath ?? 'qemu-system-x86_64',
        qemuArguments(spec, this.options.acceleration),
        { stdio: ['ignore', logFd, logFd, ...(stateFd === null ? [] : [stateFd])] },
      );
    } finally {
      closeSync(logFd);
      if (stateFd !== null) closeSync(stateFd);
    }
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

    // A restore connects to QMP while it waits for the agent socket, not after.
    const qmpConnecting = spec.incomingStatePath ? QmpClient.connect(qmpSocketPath(spec)) : null;
    qmpConnecting?.catch(() => undefined);
    let channel: Socket;
    try {
      channel = await connectWhenListening(
        agentSocketPath(spec),
        exited,
        this.options.socketTimeoutMs ?? DEFAULT_SOCKET_TIMEOUT_MS,
      );
      if (qmpConnecting) await loadState(await qmpConnecting);
    } catch (error) {
      qmpConnecting?.then((qmp) => qmp.close()).catch(() => undefined);
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
      saveState: (statePath) => saveState(spec, statePath),
    };
  }
}

/** Paths reach QEMU's exec: migration through /bin/sh, so they must not need quoting. */
function shellSafePath(path: string): string {
  if (!/^[\w./+-]+$/.test(path)) {
    throw new HearthError(
      'invalid_config',
      `The snapshot path ${path} has characters QEMU's exec: cannot take.`,
    );
  }
  return path;
}

async function saveState(spec: VmSpec, statePath: string): Promise<void> {
  const qmp = await QmpClient.connect(qmpSocketPath(spec));
  try {
    await qmp.execute('stop');
    await qmp.execute('migrate-set-capabilities', {
      capabilities: [{ capability: 'x-ignore-shared', state: true }],
    });
    await qmp.execute('migrate', { uri: `exec:cat > ${shellSafePath(statePath)}` });
    const done = await pollQmp<{ status?: string; 'error-desc'?: string }>(
      qmp,
      'query-migrate',
      (answer) => answer.status === 'completed' || answer.status === 'failed',
      MIGRATION_TIMEOUT_MS,
    );
    if (done.status !== 'completed') {
      throw new HearthError('snapshot_failed', `QEMU could not save the VM: ${done['error-desc']}`);
    }
  } finally {
    qmp.close();
  }
}

/** The fd number under which a restoring QEMU inherits its device state file. */
const INCOMING_STATE_FD = 3;

async function loadState(qmp: QmpClient): Promise<void> {
  try {
    await qmp.execute('migrate-set-capabilities', {
      capabilities: [{ capability: 'x-ignore-shared', state: true }],
    });
    await qmp.execute('migrate-incoming', { uri: `fd:${INCOMING_STATE_FD}` });
    const status = await pollQmp<{ status: string }>(
      qmp,
      'query-status',
      (answer) => answer.status !== 'inmigrate',
      MIGRATION_TIMEOUT_MS,
      1,
    );
    if (status.status !== 'paused') {
      throw new HearthError('snapshot_failed', `Restoring the VM left it ${status.status}.`);
    }
    await qmp.execute('cont');
  } finally {
    qmp.close();
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
      await new Promise((resolve) => setTimeout(resolve, SOCKET_POLL_MS));
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
