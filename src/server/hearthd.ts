import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { LIMITS } from '../api/schema.js';
import { createApiHandler, DEFAULT_MAX_UPLOAD_BYTES } from '../api/server.js';
import { Store } from '../store/db.js';
import { WarmPool } from '../sessions/pool.js';
import { SnapshotStore } from '../sessions/snapshots.js';
import { bootVm } from '../sessions/vm.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { HearthError } from '../errors.js';
import { findImages } from '../image/index.js';
import { egressConfigFromEnv, type EgressConfig } from '../network/config.js';
import { DENY_ALL, type NetworkService } from '../network/types.js';
import { reconcileRunRoot } from '../sessions/reconcile.js';
import { SessionManager } from '../sessions/manager.js';
import { chooseAcceleration, probeKvm } from '../vmm/accel.js';
import type { VmmDriver } from '../vmm/types.js';
import type { GuestImages } from '../image/index.js';
import { kernelCommandLine, QemuDriver, type Acceleration } from '../vmm/qemu.js';

export interface HearthdConfig {
  /** The state directory, with the guest images and the KVM probe's cached verdict. */
  home: string;
  /** The directory of VM run directories; hearthd cleans up what it finds there at start. */
  runDir: string;
  /** A Unix socket path, or host:port for TCP. */
  listen: string;
  /** "auto" probes KVM; "kvm" or "tcg" skips the probe. */
  accel: string;
  /** "qemu" (the default) or "firecracker", which needs the binary and a working KVM. */
  vmm: string;
  bootTimeoutMs: number;
  maxQueuedExecutions: number;
  logger: Logger;
  /** The SQLite database of API keys and session records. */
  dbPath: string;
  /** Require API keys even on a Unix socket; they are always required on TCP. */
  requireKey: boolean;
  defaultLifetimeSeconds: number;
  maxLifetimeSeconds: number;
  maxUploadBytes: number;
  /** VM network and egress policy (HEARTH_EGRESS=on); without it VMs have no NIC. */
  egress?: EgressConfig | null;
  /** Idle VMs of the default shape kept ready; 0 turns the warm pool off. */
  poolSize: number;
  /** Restore sessions from snapshots instead of booting them (QEMU only). */
  snapshots: boolean;
  /** The snapshot directory. Snapshots are large and valid only for the current images. */
  snapshotDir: string;
}

// A TCG boot takes a few seconds alone, and several boots at once on a small host share
// its cores, so the agent gets a minute before a boot counts as failed.
const DEFAULT_BOOT_TIMEOUT_MS = 60_000;
// Enough for a client that pipelines a few calls; more waiting calls mean a runaway client.
const DEFAULT_MAX_QUEUED_EXECUTIONS = 16;

export function configFromEnv(home: string): HearthdConfig {
  return {
    home,
    runDir: process.env.HEARTH_RUN_DIR ?? join(home, 'run'),
    listen: process.env.HEARTH_LISTEN ?? join(home, 'hearthd.sock'),
    accel: process.env.HEARTH_ACCEL ?? 'auto',
    vmm: process.env.HEARTH_VMM ?? 'qemu',
    bootTimeoutMs: Number(process.env.HEARTH_BOOT_TIMEOUT_MS ?? DEFAULT_BOOT_TIMEOUT_MS),
    maxQueuedExecutions: DEFAULT_MAX_QUEUED_EXECUTIONS,
    logger: pino({ level: process.env.HEARTH_LOG_LEVEL ?? 'info' }),
    dbPath: process.env.HEARTH_DB ?? join(home, 'hearth.db'),
    requireKey: process.env.HEARTH_REQUIRE_KEY === '1',
    defaultLifetimeSeconds: numberFromEnv(
      'HEARTH_DEFAULT_LIFETIME_SECONDS',
      LIMITS.lifetimeSeconds.default,
    ),
    maxLifetimeSeconds: numberFromEnv('HEARTH_MAX_LIFETIME_SECONDS', LIMITS.lifetimeSeconds.max),
    maxUploadBytes: numberFromEnv('HEARTH_MAX_UPLOAD_BYTES', DEFAULT_MAX_UPLOAD_BYTES),
    egress: egressConfigFromEnv(process.env),
    poolSize: process.env.HEARTH_POOL_SIZE === '0' ? 0 : numberFromEnv('HEARTH_POOL_SIZE', 1),
    snapshots: process.env.HEARTH_SNAPSHOTS !== '0',
    snapshotDir: process.env.HEARTH_SNAPSHOT_DIR ?? join(home, 'snapshots'),
  };
}

function numberFromEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) {
    throw new HearthError('invalid_config', `${name} must be a positive number, not "${raw}".`);
  }
  return value;
}

export interface RunningHearthd {
  server: Server;
  manager: SessionManager;
  snapshots?: SnapshotStore;
  pool?: WarmPool;
  acceleration: Acceleration;
  /** Closes every session and the listener. Idempotent. */
  close(): Promise<void>;
}

export async function startHearthd(config: HearthdConfig): Promise<RunningHearthd> {
  // Claimed before anything is cleaned up: the cleanup would kill a running hearthd's VMs.
  const releaseRunDir = await claimRunDir(config.runDir);
  try {
    return await startClaimed(config, releaseRunDir);
  } catch (error) {
    await releaseRunDir();
    throw error;
  }
}

/**
 * Records this process as the owner of a run directory, or throws already_running while
 * another live hearthd owns it. Returns the function that releases it.
 */
async function claimRunDir(runDir: string): Promise<() => Promise<void>> {
  const pidPath = join(runDir, 'hearthd.pid');
  await mkdir(runDir, { recursive: true });
  try {
    const pid = Number.parseInt(await readFile(pidPath, 'utf8'), 10);
    const commandLine = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    if (pid !== process.pid && commandLine.includes('node')) {
      throw new HearthError(
        'already_running',
        `Another hearthd (pid ${pid}) uses the run directory ${runDir}; stop it first, ` +
          'or give this one its own HEARTH_RUN_DIR.',
        409,
      );
    }
  } catch (error) {
    if (error instanceof HearthError) throw error;
    // No pid file, or its process is gone: the directory is free.
  }
  await writeFile(pidPath, String(process.pid));
  return () => rm(pidPath, { force: true });
}

async function startClaimed(
  config: HearthdConfig,
  releaseRunDir: () => Promise<void>,
): Promise<RunningHearthd> {
  const { logger } = config;
  const images = await findImages(config.home);
  if (!images) {
    throw new HearthError(
      'images_missing',
      `No guest kernel and rootfs under ${config.home}/images; run ./setup.sh first.`,
    );
  }
  const acceleration = await chooseAcceleration({
    home: config.home,
    images,
    override: config.accel,
  });
  logger.info(
    { accelerator: acceleration.accelerator, reason: acceleration.reason },
    'accelerator chosen',
  );

  const driver = await chooseDriver(config, acceleration, images);
  const store = new Store(config.dbPath);
  const runRoot = join(config.runDir, 'vms');
  const lost = store.markLiveSessionsLost(runRoot);
  if (lost.length) logger.warn({ sessionIds: lost }, 'marked sessions of an earlier hearthd lost');
  await mkdir(runRoot, { recursive: true });
  const leftovers = await reconcileRunRoot(runRoot, logger);
  if (leftovers) logger.warn({ count: leftovers }, 'cleaned up VMs of an earlier hearthd');
  // After the VMs of an earlier hearthd are gone, their TAPs and nft rules can go too.
  const network = config.egress ? await startNetwork(config.egress, logger) : undefined;

  const { snapshots, pool } = await startFastPaths(
    config,
    driver,
    images,
    runRoot,
    acceleration,
    network,
  );
  const manager = new SessionManager({
    snapshots,
    pool,
    driver,
    images,
    runRoot,
    logDir: join(config.runDir, 'logs'),
    bootTimeoutMs: config.bootTimeoutMs,
    maxQueuedExecutions: config.maxQueuedExecutions,
    store,
    network,
    logger,
  });
  const server = createServer(
    createApiHandler({
      manager,
      store,
      logger,
      requireKey: config.requireKey || !isUnixPath(config.listen),
      defaultLifetimeSeconds: config.defaultLifetimeSeconds,
      maxLifetimeSeconds: config.maxLifetimeSeconds,
      maxUploadBytes: config.maxUploadBytes,
    }),
  );
  // Execute calls may run for an hour; the server must not cut them off.
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  await listen(server, config.listen);
  logger.info({ listen: config.listen }, 'hearthd listening');

  let closing: Promise<void> | null = null;
  return {
    server,
    manager,
    snapshots,
    pool,
    acceleration,
    close: () => {
      closing ??= (async () => {
        server.close();
        await manager.shutdown();
        await network?.close();
        server.closeAllConnections();
        store.close();
        if (isUnixPath(config.listen)) {
          await rm(config.listen, { force: true });
          await rm(`${config.listen}.pid`, { force: true });
        }
        await releaseRunDir();
        logger.info('hearthd stopped');
      })();
      return closing;
    },
  };
}

/** The shape most sessions ask for: the API's defaults. */
export const DEFAULT_SHAPE = {
  cpuCount: LIMITS.cpuCount.default,
  memoryMib: LIMITS.memoryMib.default,
  diskMib: LIMITS.diskMib.default,
};

/**
 * Sets up snapshots and the warm pool, which need QEMU. The default shape's snapshot is
 * made in the background, then the pool fills from it. With a network service, pool VMs
 * wait on their own TAP under deny-all until a session claims one with its own policy.
 */
async function startFastPaths(
  config: HearthdConfig,
  driver: VmmDriver,
  images: GuestImages,
  runRoot: string,
  acceleration: Acceleration,
  network: NetworkService | undefined,
): Promise<{ snapshots?: SnapshotStore; pool?: WarmPool }> {
  if (!(driver instanceof QemuDriver)) return {};
  const { logger } = config;
  const bootOptions = {
    runRoot,
    logDir: join(config.runDir, 'logs'),
    bootTimeoutMs: config.bootTimeoutMs,
  };
  let snapshots: SnapshotStore | undefined;
  if (config.snapshots) {
    const { stdout } = await promisify(execFile)('qemu-system-x86_64', ['--version']);
    snapshots = new SnapshotStore({
      dir: config.snapshotDir,
      driver,
      images,
      // A template's kernel command line stays with every VM restored from it.
      vmmIdentity: [
        stdout.split('\n')[0],
        acceleration.accelerator,
        kernelCommandLine(acceleration),
      ].join(' '),
      ...bootOptions,
      logger,
      network,
    });
    await snapshots.removeStale();
  }
  if (config.poolSize === 0) {
    if (snapshots) void snapshots.ensure(DEFAULT_SHAPE);
    return { snapshots };
  }
  const pool = new WarmPool({
    size: config.poolSize,
    shape: DEFAULT_SHAPE,
    logger,
    startVm: async () => {
      if (snapshots && (await snapshots.has(DEFAULT_SHAPE))) {
        try {
          return {
            booted: await snapshots.restore(DEFAULT_SHAPE, {}, DENY_ALL),
            path: 'snapshot',
          };
        } catch {
          // fall back to a boot below
        }
      }
      const booted = await bootVm(driver, images, {
        ...DEFAULT_SHAPE,
        env: {},
        ...bootOptions,
        attachNetwork: network ? (vmId) => network.attach(vmId, DENY_ALL) : undefined,
      });
      return { booted, path: 'boot' };
    },
  });
  if (snapshots) void snapshots.ensure(DEFAULT_SHAPE).then(() => pool.refill());
  else pool.refill();
  return { snapshots, pool };
}

/**
 * Returns the configured VMM driver. With "firecracker", hearthd refuses to start unless the
 * binary is on PATH and KVM can boot the guest: it never falls back to QEMU silently.
 */
async function chooseDriver(
  config: HearthdConfig,
  acceleration: Acceleration,
  images: GuestImages,
): Promise<VmmDriver> {
  if (config.vmm === 'qemu') return new QemuDriver({ acceleration });
  if (config.vmm !== 'firecracker') {
    throw new HearthError(
      'invalid_config',
      `HEARTH_VMM must be qemu or firecracker, not "${config.vmm}".`,
    );
  }
  const { FirecrackerDriver, firecrackerAvailability } =
    await import('../vmm/firecracker/index.js');
  const availability = await firecrackerAvailability({
    kvmUsable: async () =>
      acceleration.accelerator === 'kvm'
        ? { usable: true, reason: acceleration.reason }
        : probeKvm(config.home, images),
  });
  if (!availability.usable) {
    throw new HearthError(
      'vmm_unavailable',
      `HEARTH_VMM=firecracker, but ${availability.reason}. Install Firecracker on a host ` +
        'whose KVM works, or set HEARTH_VMM=qemu.',
    );
  }
  return new FirecrackerDriver({ logger: config.logger });
}

/** Creates the egress service and removes what an earlier hearthd left; loaded lazily. */
async function startNetwork(config: EgressConfig, logger: Logger): Promise<NetworkService> {
  const { EgressService } = await import('../network/service.js');
  const network = await EgressService.create(config, logger);
  await network.reconcile();
  return network;
}

function isUnixPath(listen: string): boolean {
  return listen.startsWith('/') || listen.startsWith('.');
}

async function listen(server: Server, address: string): Promise<void> {
  if (isUnixPath(address)) {
    if (await socketAnswers(address)) {
      throw new HearthError(
        'already_running',
        `Another hearthd is already listening on ${address}.`,
        409,
      );
    }
    await rm(address, { force: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(address, () => resolve());
    });
    // The socket gives full control of the sandboxes, so only its owner may use it.
    await chmod(address, 0o600);
    await writeFile(`${address}.pid`, String(process.pid));
    return;
  }
  const separator = address.lastIndexOf(':');
  const host = address.slice(0, separator) || '127.0.0.1';
  const port = Number(address.slice(separator + 1));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
}

function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
