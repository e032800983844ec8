// hearthd as a separate process on 127.0.0.1, as an SDK user runs it, with a home of its
// own that shares only the guest images that ./setup.sh built.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { copyFile, mkdtemp, open, readFile, rm, symlink } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hearthHome } from '../../src/config.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const CLI = join(ROOT, 'bin/hearth.js');
const SERVER = join(ROOT, 'dist/src/server/main.js');

// The first boot may follow a KVM probe, and other tests may keep both cores busy.
const START_TIMEOUT_MS = 120_000;
// Stopping closes every VM of this hearthd; each takes well under a second.
const STOP_TIMEOUT_MS = 60_000;

export interface HearthdProcess {
  /** http://127.0.0.1:PORT */
  baseUrl: string;
  home: string;
  /** hearthd's JSON log, for failure messages. */
  logPath: string;
  /** Creates an API key with `hearth keys create` and returns it. */
  createKey(name: string): Promise<string>;
  /** Stops hearthd with SIGTERM, which closes its VMs, and deletes its home. */
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Extra environment variables for hearthd, e.g. HEARTH_MAX_UPLOAD_BYTES. */
  env?: Record<string, string>;
}

export async function startHearthdProcess(options: StartOptions = {}): Promise<HearthdProcess> {
  const home = await mkdtemp(join(tmpdir(), 'hearth-sdk-'));
  await symlink(join(hearthHome(), 'images'), join(home, 'images'));
  // A copy of the KVM probe's verdict spares this hearthd the probe.
  await copyFile(join(hearthHome(), 'accel.json'), join(home, 'accel.json')).catch(() => undefined);
  const port = await freePort();
  const logPath = join(home, 'hearthd.log');
  const log = await open(logPath, 'a');
  const environment = {
    ...process.env,
    HEARTH_HOME: home,
    HEARTH_RUN_DIR: join(home, 'run'),
    HEARTH_LISTEN: `127.0.0.1:${port}`,
    HEARTH_LOG_LEVEL: 'info',
    // No warm pool and no snapshot, so this hearthd boots only the VMs that tests request.
    HEARTH_POOL_SIZE: '0',
    HEARTH_SNAPSHOTS: '0',
    ...options.env,
  };
  const child = spawn(process.execPath, [SERVER], {
    env: environment,
    stdio: ['ignore', log.fd, log.fd],
  });
  await log.close();
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const baseUrl = `http://127.0.0.1:${port}`;

  try {
    await waitUntilHealthy(baseUrl, exited, logPath);
  } catch (error) {
    await stopChild(child, exited);
    await rm(home, { recursive: true, force: true });
    throw error;
  }

  return {
    baseUrl,
    home,
    logPath,
    createKey: (name) => createKey(environment, name),
    stop: async () => {
      await stopChild(child, exited);
      await rm(home, { recursive: true, force: true });
    },
  };
}

/** Returns a TCP port that was free a moment ago. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (address === null || typeof address === 'string') throw new Error('no TCP port assigned');
  return address.port;
}

async function waitUntilHealthy(
  baseUrl: string,
  exited: Promise<number | null>,
  logPath: string,
): Promise<void> {
  let exitCode: number | null | undefined;
  void exited.then((code) => (exitCode = code));
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (exitCode !== undefined) {
      throw new Error(
        `hearthd exited with code ${exitCode} while starting:\n${await tail(logPath)}`,
      );
    }
    try {
      if ((await fetch(`${baseUrl}/healthz`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`hearthd did not answer within ${START_TIMEOUT_MS} ms:\n${await tail(logPath)}`);
}

function createKey(environment: NodeJS.ProcessEnv, name: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [CLI, 'keys', 'create', '--name', name],
      { env: environment, timeout: 60_000 },
      (error, stdout, stderr) => {
        const key = /\bhk_[A-Za-z0-9_-]+/.exec(stdout)?.[0];
        if (error || !key) {
          reject(
            new Error(`hearth keys create failed: ${error?.message ?? ''}\n${stdout}${stderr}`),
          );
        } else {
          resolve(key);
        }
      },
    );
  });
}

async function stopChild(child: ChildProcess, exited: Promise<number | null>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const stopped = await Promise.race([
    exited.then(() => true),
    new Promise<false>((resolve) => setTimeout(() => resolve(false), STOP_TIMEOUT_MS).unref()),
  ]);
  if (!stopped) {
    child.kill('SIGKILL');
    await exited;
  }
}

async function tail(path: string): Promise<string> {
  const text = await readFile(path, 'utf8').catch(() => '(no log)');
  return text.trimEnd().split('\n').slice(-20).join('\n');
}
