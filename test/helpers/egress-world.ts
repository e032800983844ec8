// A small closed "world" for the egress tests, made of two network namespaces joined by a
// veth pair, with no route to anything else:
//
//   host namespace (hearthd, its TAPs and nft table)      world namespace (servers)
//   uplink 198.18.0.1/24, fd00:beef::1/64  ◄── veth ──►   wan 198.18.0.2/24 and the
//   a "host service" on 0.0.0.0:8000                      server addresses in WORLD
//
// hearthd runs as a child process inside the host namespace. Deleting the namespaces
// removes every link, TAP and nft table in them, so close() leaves nothing behind.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { copyFile, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { callApi, type Target } from '../../src/cli/client.js';
import { hearthHome } from '../../src/config.js';
import { qemuProcessesUnder } from './hearthd.js';
import { linkNamespaces, mustRun, Netns } from './netns.js';
import type { WorldRole } from './world-server.js';

export const WORLD = {
  hostUplink: '198.18.0.1',
  worldGateway: '198.18.0.2',
  /** allowed.test */
  allowedWeb: '198.18.0.10',
  /** other.test */
  otherWeb: '198.18.0.11',
  /** every name under wild.test */
  wildWeb: '198.18.0.12',
  dns: '198.18.0.53',
  /** pypi.test, the package index configured as the host's pip index */
  index: '198.18.0.80',
  metadata: '169.254.169.254',
  hostIpv6: 'fd00:beef::1',
  webIpv6: 'fd00:beef::10',
  guestIpv6Prefix: 'fd00:cafe::/64',
  hostServicePort: 8000,
  pool: '100.96.0.0/24',
  indexUrl: 'http://pypi.test/simple/',
} as const;

const SERVER_SCRIPT = fileURLToPath(new URL('./world-server.js', import.meta.url));
const HEARTHD_SCRIPT = fileURLToPath(new URL('../../src/server/main.js', import.meta.url));

/** The fast start paths of a world's hearthd; both are off unless a test turns them on. */
export interface FastPaths {
  snapshots?: boolean;
  /** Idle VMs the warm pool keeps. */
  poolSize?: number;
}

export class EgressWorld {
  private hearthd: ChildProcess | null = null;
  private readonly children: ChildProcess[] = [];
  private fastPaths: FastPaths = {};

  private constructor(
    readonly host: Netns,
    readonly world: Netns,
    readonly dir: string,
  ) {}

  get home(): string {
    return join(this.dir, 'home');
  }

  get runDir(): string {
    return join(this.dir, 'run');
  }

  get hearthdLog(): string {
    return join(this.dir, 'hearthd.log');
  }

  get target(): Target {
    return { socketPath: join(this.dir, 'hearthd.sock') };
  }

  /** Builds the namespaces, the certificate and the servers. Cleans up if any step fails. */
  static async create(): Promise<EgressWorld> {
    const dir = await mkdtemp(join(tmpdir(), 'hearth-egress-'));
    let host: Netns | null = null;
    let world: Netns | null = null;
    try {
      host = await Netns.create('host');
      world = await Netns.create('world');
      const created = new EgressWorld(host, world, dir);
      await created.wire();
      await created.startServers();
      return created;
    } catch (error) {
      await world?.delete();
      await host?.delete();
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }

  private async wire(): Promise<void> {
    const { host, world } = this;
    await linkNamespaces(host, 'uplink', world, 'wan');
    await host.must('ip', ['addr', 'add', `${WORLD.hostUplink}/24`, 'dev', 'uplink']);
    await host.must('ip', ['-6', 'addr', 'add', `${WORLD.hostIpv6}/64`, 'dev', 'uplink', 'nodad']);
    // The metadata address lives in the world; the host routes to it as a cloud host would.
    await host.must('ip', ['route', 'add', `${WORLD.metadata}/32`, 'via', WORLD.worldGateway]);
    // A host that forwards IPv6, so that only hearth stops a VM's IPv6.
    await host.must('sysctl', ['-qw', 'net.ipv6.conf.all.forwarding=1']);

    await world.must('ip', ['addr', 'add', `${WORLD.worldGateway}/24`, 'dev', 'wan']);
    for (const address of [
      WORLD.allowedWeb,
      WORLD.otherWeb,
      WORLD.wildWeb,
      WORLD.dns,
      WORLD.index,
    ]) {
      await world.must('ip', ['addr', 'add', `${address}/32`, 'dev', 'wan']);
    }
    await world.must('ip', ['addr', 'add', `${WORLD.metadata}/32`, 'dev', 'wan']);
    await world.must('ip', ['-6', 'addr', 'add', `${WORLD.webIpv6}/64`, 'dev', 'wan', 'nodad']);
    // Replies to the IPv6 prefix a guest may give itself go back through the host.
    await world.must('ip', ['-6', 'route', 'add', WORLD.guestIpv6Prefix, 'via', WORLD.hostIpv6]);
  }

  private async startServers(): Promise<void> {
    const certPath = join(this.dir, 'cert.pem');
    const keyPath = join(this.dir, 'key.pem');
    await mustRun('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      keyPath,
      '-out',
      certPath,
      '-days',
      '1',
      '-subj',
      '/CN=allowed.test',
      '-addext',
      'subjectAltName=DNS:allowed.test,DNS:other.test,DNS:*.wild.test',
    ]);
    const webRoles = (address: string): WorldRole[] => [
      { kind: 'http', address, port: 80 },
      { kind: 'https', address, port: 443, certPath, keyPath },
    ];
    const worldRoles: WorldRole[] = [
      ...webRoles(WORLD.allowedWeb),
      ...webRoles(WORLD.otherWeb),
      ...webRoles(WORLD.wildWeb),
      { kind: 'http', address: WORLD.metadata, port: 80 },
      { kind: 'http', address: WORLD.webIpv6, port: 80 },
      { kind: 'index', address: WORLD.index, port: 80 },
      {
        kind: 'dns',
        address: WORLD.dns,
        port: 53,
        records: {
          'allowed.test': WORLD.allowedWeb,
          'other.test': WORLD.otherWeb,
          '*.wild.test': WORLD.wildWeb,
          'pypi.test': WORLD.index,
        },
      },
    ];
    await this.startServer(this.world, 'world', worldRoles);
    await this.startServer(this.host, 'host-service', [
      { kind: 'http', address: '0.0.0.0', port: WORLD.hostServicePort },
    ]);
  }

  private async startServer(netns: Netns, name: string, roles: WorldRole[]): Promise<void> {
    const configPath = join(this.dir, `${name}.json`);
    await writeFile(configPath, JSON.stringify(roles));
    const child = spawn(
      'ip',
      ['netns', 'exec', netns.name, process.execPath, SERVER_SCRIPT, configPath],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    this.children.push(child);
    let stderr = '';
    child.stderr!.on('data', (chunk) => (stderr += chunk));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${name} servers did not start: ${stderr}`)),
        30_000,
      );
      child.stdout!.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${name} servers exited with ${code}: ${stderr}`));
      });
    });
  }

  /** Starts hearthd in the host namespace with egress on and waits for its health check. */
  async startHearthd(fastPaths: FastPaths = {}): Promise<void> {
    this.fastPaths = fastPaths;
    await rm(this.home, { recursive: true, force: true });
    await mustRun('mkdir', ['-p', this.home]);
    await symlink(join(hearthHome(), 'images'), join(this.home, 'images'));
    await copyFile(join(hearthHome(), 'accel.json'), join(this.home, 'accel.json')).catch(
      () => undefined,
    );
    await this.restartHearthd();
  }

  /**
   * Starts hearthd again on the same home and run directory (after a crash, say), so that
   * its snapshots are kept. `fastPaths` replaces the ones of the last start.
   */
  async restartHearthd(fastPaths?: FastPaths): Promise<void> {
    if (fastPaths) this.fastPaths = fastPaths;
    const log = openSync(this.hearthdLog, 'a');
    const env = {
      ...process.env,
      HEARTH_HOME: this.home,
      HEARTH_RUN_DIR: this.runDir,
      HEARTH_LISTEN: this.target.socketPath!,
      HEARTH_LOG_LEVEL: 'info',
      HEARTH_BOOT_TIMEOUT_MS: '180000',
      HEARTH_POOL_SIZE: String(this.fastPaths.poolSize ?? 0),
      HEARTH_SNAPSHOTS: this.fastPaths.snapshots ? '1' : '0',
      HEARTH_EGRESS: 'on',
      HEARTH_EGRESS_POOL: WORLD.pool,
      HEARTH_EGRESS_DNS_UPSTREAM: WORLD.dns,
      HEARTH_EGRESS_PIP_INDEX_URL: WORLD.indexUrl,
      HEARTH_EGRESS_NPM_REGISTRY: '',
      HEARTH_EGRESS_APT_URLS: '',
    };
    const child = spawn('ip', ['netns', 'exec', this.host.name, process.execPath, HEARTHD_SCRIPT], {
      env,
      stdio: ['ignore', log, log],
    });
    closeSync(log);
    this.hearthd = child;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      const healthy = await callApi(this.target, 'GET', '/healthz').then(
        () => true,
        () => false,
      );
      if (healthy) return;
      const stopped = await Promise.race([exited.then(() => true), sleep(250).then(() => false)]);
      if (stopped) throw new Error(`hearthd exited at start:\n${await this.tailLog()}`);
    }
    throw new Error(`hearthd did not answer within 120 s:\n${await this.tailLog()}`);
  }

  /** Stops hearthd: SIGTERM for a clean shutdown, SIGKILL to simulate a crash. */
  async stopHearthd(signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
    const child = this.hearthd;
    this.hearthd = null;
    if (child) await stopChild(child, signal);
  }

  /** Counts the lines of hearthd's log whose msg is `message`, across restarts. */
  async countLogMessages(message: string): Promise<number> {
    const text = await readFile(this.hearthdLog, 'utf8').catch(() => '');
    const quoted = `"msg":${JSON.stringify(message)}`;
    return text.split('\n').filter((line) => line.includes(quoted)).length;
  }

  /** Waits until hearthd has logged `message` at least `count` times in all. */
  async waitForLogMessage(message: string, count: number, timeoutMs = 180_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while ((await this.countLogMessages(message)) < count) {
      if (Date.now() > deadline) {
        throw new Error(
          `hearthd did not log "${message}" ${count} times within ${timeoutMs} ms:\n` +
            (await this.tailLog()),
        );
      }
      await sleep(250);
    }
  }

  async tailLog(lines = 40): Promise<string> {
    const text = await readFile(this.hearthdLog, 'utf8').catch(() => '');
    return text.trimEnd().split('\n').slice(-lines).join('\n');
  }

  /** Stops every process the world started, kills leftover QEMUs and deletes everything. */
  async close(): Promise<void> {
    await this.stopHearthd('SIGTERM').catch(() => undefined);
    for (const pid of await qemuProcessesUnder(this.runDir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // it exited meanwhile
      }
    }
    await Promise.allSettled(this.children.map((child) => stopChild(child, 'SIGTERM')));
    await this.world.delete();
    await this.host.delete();
    await rm(this.dir, { recursive: true, force: true });
  }
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  const done = await Promise.race([exited.then(() => true), sleep(30_000).then(() => false)]);
  if (!done) {
    child.kill('SIGKILL');
    await exited;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
