import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { LIMITS } from '../api/schema.js';
import { createApiHandler, DEFAULT_MAX_UPLOAD_BYTES } from '../api/server.js';
import { Store } from '../store/db.js';
import { HearthError } from '../errors.js';
import { findImages } from '../image/index.js';
import { reconcileRunRoot } from '../sessions/reconcile.js';
import { SessionManager } from '../sessions/manager.js';
import { chooseAcceleration, probeKvm } from '../vmm/accel.js';
import type { VmmDriver } from '../vmm/types.js';
import type { GuestImages } from '../image/index.js';
import { QemuDriver, type Acceleration } from '../vmm/qemu.js';

export interface HearthdConfig {
  /** Where the guest images and the KVM probe's verdict are found. */
  home: string;
  /** Where VM run directories live; at start, anything left in it is cleaned up. */
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
  acceleration: Acceleration;
  /** Closes every session and the listener. Idempotent. */
  close(): Promise<void>;
}

export async function startHearthd(config: HearthdConfig): Promise<RunningHearthd> {
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
  const lost = store.markLiveSessionsLost();
  if (lost.length) logger.warn({ sessionIds: lost }, 'marked sessions of an earlier hearthd lost');
  const runRoot = join(config.runDir, 'vms');
  await mkdir(runRoot, { recursive: true });
  const leftovers = await reconcileRunRoot(runRoot, logger);
  if (leftovers) logger.warn({ count: leftovers }, 'cleaned up VMs of an earlier hearthd');

  const manager = new SessionManager({
    driver,
    images,
    runRoot,
    logDir: join(config.runDir, 'logs'),
    bootTimeoutMs: config.bootTimeoutMs,
    maxQueuedExecutions: config.maxQueuedExecutions,
    store,
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
    acceleration,
    close: () => {
      closing ??= (async () => {
        server.close();
        await manager.shutdown();
        server.closeAllConnections();
        store.close();
        if (isUnixPath(config.listen)) {
          await rm(config.listen, { force: true });
          await rm(`${config.listen}.pid`, { force: true });
        }
        logger.info('hearthd stopped');
      })();
      return closing;
    },
  };
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
