import { randomBytes } from 'node:crypto';
import type { AgentResult, ExecHandlers } from '../agent/client.js';
import { HearthError } from '../errors.js';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { FileListing } from '../agent/files.js';
import { DENY_ALL, type EgressPolicy, type NetworkService } from '../network/types.js';
import type { SessionRecord, Store } from '../store/db.js';
import type { VmmDriver } from '../vmm/types.js';
import type { WarmPool } from './pool.js';
import type { SnapshotStore } from './snapshots.js';
import { bootVm, type BootedVm, type VmImages } from './vm.js';

//  A session's states:
//
//   booting ──► ready ◄──► busy
//      │          │          │
//      ▼          ▼          ▼
//    failed    closing ◄─────┘   (close, lifetime end, server shutdown, VM death)
//                 │
//                 ▼
//              closed
export type SessionState = 'booting' | 'ready' | 'busy' | 'closing' | 'closed' | 'failed';

export type StartPath = 'pool' | 'snapshot' | 'boot';

export type CloseReason = 'closed' | 'expired' | 'vm_exited' | 'shutdown' | 'lost';

export interface SessionOptions {
  cpuCount: number;
  memoryMib: number;
  diskMib: number;
  env: Record<string, string>;
  lifetimeSeconds: number;
  /** Deny-all when omitted. */
  egress?: EgressPolicy;
}

export interface ExecuteOptions {
  code: string;
  language: 'python' | 'bash';
  timeoutSeconds: number | null;
  env: Record<string, string>;
  cwd: string | null;
  outputLimitBytes: number;
}

export interface ExecuteOutcome {
  result: AgentResult;
  stdout: Buffer;
  stderr: Buffer;
  /** Time spent waiting for earlier calls on the same session. */
  queuedMs: number;
  /** From the host sending the call to the host receiving the result. */
  roundTripMs: number;
}

export interface SessionInfo {
  id: string;
  /** The API key id that created the session, or "local" for the Unix socket. */
  owner: string;
  state: SessionState;
  closeReason: CloseReason | null;
  cpuCount: number;
  memoryMib: number;
  diskMib: number;
  envKeys: string[];
  createdAt: Date;
  expiresAt: Date;
  accelerator: string | null;
  /** Milliseconds from the create call to the agent's reply, whichever path started the VM. */
  bootMs: number | null;
  /** The path that started the VM: the warm pool, a snapshot restore, or a boot. */
  startPath: StartPath | null;
  kernelRelease: string | null;
  /** The egress policy in effect; null when the VM has no network device. */
  egress: EgressPolicy | null;
}

export interface ManagerOptions {
  driver: VmmDriver;
  images: VmImages;
  runRoot: string;
  logDir: string;
  bootTimeoutMs: number;
  /** Calls that may wait behind a running one on the same session; more get session_busy. */
  maxQueuedExecutions: number;
  /** Closed sessions are remembered this long, so calls on them get a precise error. */
  closedRetentionMs?: number;
  /** Gives VMs a network device with an egress policy; without it VMs have no network. */
  network?: NetworkService;
  /** Durable session records, so that a restarted hearthd still reports on old sessions. */
  store: Store;
  /** Idle VMs of one shape, ready to hand out. */
  pool?: WarmPool;
  /** Snapshots to restore sessions from instead of booting. */
  snapshots?: SnapshotStore;
  /** Receives the reasons a pool VM or a snapshot was passed over for a slower start. */
  logger?: Logger;
}

function notFound(id: string): HearthError {
  return new HearthError('session_not_found', `No session with id ${id}.`);
}

function endedError(id: string, reason: CloseReason | null): HearthError {
  if (reason === 'expired') {
    return new HearthError('session_expired', `Session ${id} reached the end of its lifetime.`);
  }
  if (reason === 'vm_exited') {
    return new HearthError('session_lost', `The VM of session ${id} exited unexpectedly.`, 410);
  }
  if (reason === 'lost') {
    return new HearthError(
      'session_lost',
      `Session ${id} was lost when hearthd restarted; its VM and files are gone.`,
      410,
    );
  }
  return new HearthError('session_closed', `Session ${id} is closed.`);
}

function infoFromRecord(record: SessionRecord): SessionInfo {
  const options = JSON.parse(record.optionsJson) as Omit<SessionOptions, 'env'> & {
    env: string[];
  };
  return {
    id: record.id,
    owner: record.owner,
    state: record.state as SessionState,
    closeReason: record.closeReason as CloseReason | null,
    cpuCount: options.cpuCount,
    memoryMib: options.memoryMib,
    diskMib: options.diskMib,
    envKeys: options.env,
    createdAt: new Date(record.createdAt),
    expiresAt: new Date(record.expiresAt),
    accelerator: null,
    bootMs: null,
    startPath: null,
    kernelRelease: null,
    egress: null,
  };
}

function isDenyAll(policy: EgressPolicy): boolean {
  return (
    policy.allowDomains.length === 0 &&
    policy.allowCidrs.length === 0 &&
    !policy.allowPackageManagers
  );
}

// Long enough for a client to see why its session went away, short enough to bound memory.
const DEFAULT_CLOSED_RETENTION_MS = 60 * 60 * 1000;

class Session {
  state: SessionState = 'booting';
  closeReason: CloseReason | null = null;
  booted: BootedVm | null = null;
  boot: Promise<BootedVm> | null = null;
  queue: Promise<unknown> = Promise.resolve();
  queuedCount = 0;
  lifetimeTimer: NodeJS.Timeout | null = null;
  startPath: StartPath | null = null;
  startMs: number | null = null;
  closing: Promise<void> | null = null;

  constructor(
    readonly id: string,
    readonly owner: string,
    readonly options: SessionOptions,
    readonly createdAt: Date,
    readonly expiresAt: Date,
  ) {}

  info(): SessionInfo {
    return {
      id: this.id,
      owner: this.owner,
      state: this.state,
      closeReason: this.closeReason,
      cpuCount: this.options.cpuCount,
      memoryMib: this.options.memoryMib,
      diskMib: this.options.diskMib,
      envKeys: Object.keys(this.options.env),
      createdAt: this.createdAt,
      expiresAt: this.expiresAt,
      accelerator: this.booted?.vm.accelerator ?? null,
      bootMs: this.startMs === null ? null : Math.round(this.startMs),
      startPath: this.startPath,
      kernelRelease: this.booted?.ready.kernel_release ?? null,
      egress: this.booted?.network?.policy ?? null,
    };
  }
}

/** Owns every session of one hearthd: their VMs, their call queues and their lifetimes. */
export class SessionManager {
  private readonly sessions = new Map<string, Session>();
  private shuttingDown: Promise<void> | null = null;

  constructor(private readonly options: ManagerOptions) {}

  async create(options: SessionOptions, owner: string): Promise<SessionInfo> {
    if (this.shuttingDown) {
      throw new HearthError('server_shutting_down', 'hearthd is shutting down.', 503);
    }
    const { network } = this.options;
    const egress = options.egress ?? DENY_ALL;
    if (!network && !isDenyAll(egress)) {
      throw new HearthError(
        'egress_not_supported',
        'This hearthd gives VMs no network device, so egress cannot be allowed; ' +
          'omit egress or leave every allow list empty.',
        400,
      );
    }
    // Checked before any VM is started or taken from the pool for it.
    network?.validatePolicy(egress);
    const now = new Date();
    const session = new Session(
      `ses_${randomBytes(8).toString('hex')}`,
      owner,
      options,
      now,
      new Date(now.getTime() + options.lifetimeSeconds * 1000),
    );
    this.sessions.set(session.id, session);
    this.options.store.insertSession({
      id: session.id,
      owner,
      state: session.state,
      closeReason: null,
      vmId: null,
      createdAt: session.createdAt.toISOString(),
      expiresAt: session.expiresAt.toISOString(),
      optionsJson: JSON.stringify({ ...options, env: Object.keys(options.env) }),
      runRoot: this.options.runRoot,
    });

    const startedAt = performance.now();
    const boot = this.startVm(options, egress).then(({ booted, path }) => {
      session.startPath = path;
      session.startMs = performance.now() - startedAt;
      return booted;
    });
    session.boot = boot;
    try {
      session.booted = await boot;
    } catch (error) {
      if (session.state === 'booting') this.setState(session, 'failed');
      this.forgetLater(session);
      throw error;
    }

    if (session.state !== 'booting') {
      // close() ran while the VM booted, e.g. at server shutdown; it destroys the VM.
      throw new HearthError('session_closed', `Session ${session.id} was closed while booting.`);
    }
    this.setState(session, 'ready', session.booted.vm.vmId);
    session.lifetimeTimer = setTimeout(
      () => void this.closeSession(session, 'expired').catch(() => undefined),
      options.lifetimeSeconds * 1000,
    );
    void session.booted.vm.exited.then(() => {
      if (session.state === 'ready' || session.state === 'busy') {
        void this.closeSession(session, 'vm_exited');
      }
    });
    return session.info();
  }

  /**
   * Starts a session's VM by the fastest path that fits: a warm pool VM, a snapshot
   * restore, or a fresh boot. With a network service, a pool VM waits on its own TAP under
   * deny-all and gets the session's policy and network settings when claimed, and a
   * restore attaches a new TAP with the session's policy. A pool VM or snapshot that
   * fails falls back to the next path, and each failed VM detaches its network when it is
   * destroyed. A boot of a shape without a snapshot makes one in the background.
   */
  private async startVm(
    options: SessionOptions,
    egress: EgressPolicy,
  ): Promise<{ booted: BootedVm; path: StartPath }> {
    const { pool, snapshots, network } = this.options;
    const shape = {
      cpuCount: options.cpuCount,
      memoryMib: options.memoryMib,
      diskMib: options.diskMib,
    };
    if (pool?.fits(shape)) {
      const pooled = pool.take();
      if (pooled) {
        try {
          // The second greeting gives the VM this session's env, the clock, new entropy
          // and, with a network, eth0's settings and the policy's package-manager files.
          if (!network) {
            this.greetWithoutWaiting(pooled, options.env);
            return { booted: pooled, path: 'pool' };
          }
          if (!pooled.network) throw new Error('the pool VM has no network device');
          await pooled.network.setPolicy(egress);
          pooled.ready = await pooled.agent.hello(options.env, pooled.network.guest);
          return { booted: pooled, path: 'pool' };
        } catch (error) {
          this.options.logger?.warn(
            { vmId: pooled.vm.vmId, err: (error as Error).message },
            'pool VM could not be claimed; starting another way',
          );
          await pooled.destroy();
        }
      }
    }
    if (snapshots && (await snapshots.has(shape))) {
      try {
        return { booted: await snapshots.restore(shape, options.env, egress), path: 'snapshot' };
      } catch {
        // restore() logged why and deleted a broken snapshot. Boot, and rebuild it below.
      }
    }
    const booted = await bootVm(this.options.driver, this.options.images, {
      ...shape,
      env: options.env,
      runRoot: this.options.runRoot,
      logDir: this.options.logDir,
      bootTimeoutMs: this.options.bootTimeoutMs,
      attachNetwork: network ? (vmId) => network.attach(vmId, egress) : undefined,
    });
    if (snapshots) void snapshots.ensure(shape);
    return { booted, path: 'boot' };
  }

  /**
   * Greets a claimed pool VM without waiting for its reply, which spares a session a round
   * trip to the guest. The agent handles frames in order and finishes a greeting before
   * it reads the next frame, so the session's first call already runs with its env, clock
   * and entropy. A greeting that fails stops the VM, and the session then closes as
   * vm_exited. Network settings can fail and fall back to another VM, so network
   * sessions wait for their greeting.
   */
  private greetWithoutWaiting(pooled: BootedVm, env: Record<string, string>): void {
    pooled.agent.hello(env).then(
      (ready) => {
        pooled.ready = ready;
      },
      (error: Error) => {
        this.options.logger?.warn(
          { vmId: pooled.vm.vmId, err: error.message },
          'pool VM failed its greeting; stopping it',
        );
        void pooled.destroy();
      },
    );
  }

  /** Returns a session of this owner, live or ended; another owner's is not found. */
  get(id: string, owner: string): SessionInfo {
    const session = this.sessions.get(id);
    if (session) return this.owned(session, owner).info();
    const record = this.options.store.getSession(id);
    if (!record || record.owner !== owner) throw notFound(id);
    return infoFromRecord(record);
  }

  /** Counts sessions that are booting or running, across owners. */
  activeCount(): number {
    return [...this.sessions.values()].filter(
      (session) => session.state !== 'closed' && session.state !== 'failed',
    ).length;
  }

  /** Lists this owner's sessions that are booting or running. */
  list(owner: string): SessionInfo[] {
    return [...this.sessions.values()]
      .filter((session) => session.owner === owner)
      .filter((session) => session.state !== 'closed' && session.state !== 'failed')
      .map((session) => session.info());
  }

  writeFile(
    id: string,
    owner: string,
    path: string,
    source: AsyncIterable<Buffer | Uint8Array>,
    limitBytes: number,
  ): Promise<number> {
    return this.usable(id, owner).booted!.agent.writeFile(path, source, limitBytes);
  }

  readFile(id: string, owner: string, path: string): Promise<{ size: number; stream: Readable }> {
    return this.usable(id, owner).booted!.agent.readFile(path);
  }

  listFiles(id: string, owner: string, path: string): Promise<FileListing> {
    return this.usable(id, owner).booted!.agent.listFiles(path);
  }

  /**
   * Runs one call. Calls on one session run one at a time in arrival order; a call that
   * finds maxQueuedExecutions calls already waiting is rejected with session_busy.
   */
  async execute(
    id: string,
    owner: string,
    request: ExecuteOptions,
    handlers: ExecHandlers = {},
    signal?: AbortSignal,
  ): Promise<ExecuteOutcome> {
    const session = this.usable(id, owner);
    if (session.queuedCount >= this.options.maxQueuedExecutions) {
      throw new HearthError(
        'session_busy',
        `Session ${id} already has ${session.queuedCount} calls waiting; retry when one ends.`,
      );
    }
    session.queuedCount += 1;
    const enqueuedAt = performance.now();
    const run = session.queue.then(async () => {
      session.queuedCount -= 1;
      const live = this.usable(id, owner);
      if (signal?.aborted) {
        throw new HearthError('cancelled', 'The client went away before the call started.', 499);
      }
      const queuedMs = performance.now() - enqueuedAt;
      live.state = 'busy';
      const sentAt = performance.now();
      try {
        const outcome = await live
          .booted!.agent.execute(
            {
              code: request.code,
              language: request.language,
              timeout_seconds: request.timeoutSeconds,
              env: request.env,
              cwd: request.cwd,
              output_limit_bytes: request.outputLimitBytes,
            },
            handlers,
            signal,
          )
          .catch((error: unknown) => {
            // A close while the call runs stops the VM under it; say so plainly.
            if (live.state === 'closing' || live.state === 'closed') {
              throw new HearthError('session_closed', `Session ${id} was closed during the call.`);
            }
            throw error;
          });
        return { ...outcome, queuedMs, roundTripMs: performance.now() - sentAt };
      } finally {
        if (live.state === 'busy') live.state = 'ready';
      }
    });
    session.queue = run.catch(() => undefined);
    return run;
  }

  /** Closes a session of this owner and removes everything it had on the host.
   * Closing a session that already ended does nothing. */
  async close(id: string, owner: string): Promise<void> {
    const session = this.sessions.get(id);
    if (session) return this.closeSession(this.owned(session, owner), 'closed');
    this.get(id, owner);
  }

  private async closeSession(session: Session, reason: CloseReason): Promise<void> {
    if (session.closing) return session.closing;
    if (session.state === 'failed' || session.state === 'closed') return;
    session.closeReason = reason;
    this.setState(session, 'closing');
    if (session.lifetimeTimer) clearTimeout(session.lifetimeTimer);
    session.closing = (async () => {
      try {
        const booted = session.booted ?? (await session.boot?.catch(() => null));
        await booted?.destroy();
      } finally {
        this.setState(session, 'closed');
        this.forgetLater(session);
      }
    })();
    return session.closing;
  }

  private setState(session: Session, state: SessionState, vmId?: string): void {
    session.state = state;
    this.options.store.updateSession(session.id, {
      state,
      closeReason: session.closeReason,
      vmId,
    });
  }

  /** Closes every session; later create calls are rejected. Idempotent. */
  shutdown(): Promise<void> {
    this.shuttingDown ??= (async () => {
      await this.options.pool?.close();
      await this.options.snapshots?.close();
      const sessions = [...this.sessions.values()];
      await Promise.allSettled(sessions.map((session) => this.closeSession(session, 'shutdown')));
    })();
    return this.shuttingDown;
  }

  private owned(session: Session, owner: string): Session {
    if (session.owner !== owner) throw notFound(session.id);
    return session;
  }

  /** Returns the live session, or throws the error that explains why it cannot take calls. */
  private usable(id: string, owner: string): Session {
    const session = this.sessions.get(id);
    if (session && this.owned(session, owner)) {
      if (session.state === 'ready' || session.state === 'busy') return session;
      if (session.state === 'booting') {
        throw new HearthError('session_busy', `Session ${id} is still booting.`);
      }
    }
    const info = this.get(id, owner);
    throw endedError(id, info.closeReason);
  }

  private forgetLater(session: Session): void {
    const timer = setTimeout(
      () => this.sessions.delete(session.id),
      this.options.closedRetentionMs ?? DEFAULT_CLOSED_RETENTION_MS,
    );
    timer.unref();
  }
}
