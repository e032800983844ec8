// hearthd as a service: API keys, lifetimes, crash recovery, metrics, OpenAPI.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFile, mkdtemp, readdir, rm, symlink } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { callApi, isHealthy, type Target } from '../../src/cli/client.js';
import { hearthHome } from '../../src/config.js';
import { Store } from '../../src/store/db.js';
import {
  createSession,
  execute,
  leftoverVms,
  qemuProcessesUnder,
  rejection,
  startTestHearthd,
  type TestHearthd,
} from '../helpers/hearthd.js';

describe('API keys over TCP', () => {
  let server: TestHearthd;
  let tcp: Target;
  let keyA: string;
  let keyB: string;

  before(async () => {
    server = await startTestHearthd({ listen: '127.0.0.1:0' });
    const { port } = server.hearthd.server.address() as AddressInfo;
    tcp = { baseUrl: `http://127.0.0.1:${port}` };
    const store = new Store(join(server.runDir, 'hearth.db'));
    keyA = store.createApiKey('a').key;
    keyB = store.createApiKey('b').key;
    store.close();
  });

  after(async () => {
    await server.close();
  });

  it('answers 401 without a key', async () => {
    const error = await rejection(callApi(tcp, 'GET', '/v1/sessions'));
    assert.equal(error.code, 'unauthorized');
    assert.equal(error.status, 401);
  });

  it('answers 401 for an unknown key', async () => {
    const error = await rejection(callApi({ ...tcp, apiKey: 'hk_wrong' }, 'GET', '/v1/sessions'));
    assert.equal(error.code, 'unauthorized');
  });

  it("hides a session from another key's owner", async () => {
    const owned = (await callApi({ ...tcp, apiKey: keyA }, 'POST', '/v1/sessions', {})) as {
      id: string;
    };
    const other = { ...tcp, apiKey: keyB };
    const error = await rejection(callApi(other, 'GET', `/v1/sessions/${owned.id}`));
    assert.equal(error.code, 'session_not_found');
    assert.equal(error.status, 404);
    const executeError = await rejection(
      callApi(other, 'POST', `/v1/sessions/${owned.id}/execute`, { code: 'print(1)' }),
    );
    assert.equal(executeError.code, 'session_not_found');
    const listed = (await callApi(other, 'GET', '/v1/sessions')) as { sessions: unknown[] };
    assert.deepEqual(listed.sessions, []);
    const mine = (await callApi({ ...tcp, apiKey: keyA }, 'GET', '/v1/sessions')) as {
      sessions: { id: string }[];
    };
    assert.deepEqual(
      mine.sessions.map((session) => session.id),
      [owned.id],
    );
    await callApi({ ...tcp, apiKey: keyA }, 'DELETE', `/v1/sessions/${owned.id}`);
  });

  it('serves health, metrics and OpenAPI without a key', async () => {
    assert.ok(await isHealthy(tcp));
    const metrics = await fetch(`${tcp.baseUrl}/metrics`);
    const text = await metrics.text();
    assert.match(text, /^hearth_sessions_created_total 1$/m);
    assert.match(text, /^hearth_api_errors_total\{code="unauthorized"\} \d+$/m);
    const openapi = (await (await fetch(`${tcp.baseUrl}/v1/openapi.json`)).json()) as {
      openapi: string;
      paths: Record<string, unknown>;
    };
    assert.equal(openapi.openapi, '3.0.3');
    assert.ok(openapi.paths['/v1/sessions/{id}/execute']);
    assert.ok(openapi.paths['/v1/sessions/{id}/files']);
  });
});

describe('session lifetime', () => {
  let server: TestHearthd;

  before(async () => {
    server = await startTestHearthd({ maxLifetimeSeconds: 600 });
  });

  after(async () => {
    await server.close();
  });

  it('rejects a lifetime over the maximum', async () => {
    const error = await rejection(createSession(server.target, { lifetime_seconds: 601 }));
    assert.equal(error.code, 'lifetime_too_long');
    assert.equal(error.status, 400);
  });

  it('tears a session down at the end of its lifetime', async () => {
    const session = await createSession(server.target, { lifetime_seconds: 10 });
    const info = (await callApi(server.target, 'GET', `/v1/sessions/${session.id}`)) as {
      created_at: string;
      expires_at: string;
    };
    assert.equal(Date.parse(info.expires_at) - Date.parse(info.created_at), 10_000);
    await new Promise((resolve) => setTimeout(resolve, 12_000));
    const error = await rejection(execute(server.target, session.id, { code: 'print(1)' }));
    assert.equal(error.code, 'session_expired');
    assert.deepEqual(await leftoverVms(server.runDir), []);
    assert.deepEqual(await qemuProcessesUnder(server.runDir), []);
  });
});

describe('crash recovery', () => {
  let home: string;
  let child: ChildProcess | null = null;
  const socketPath = () => join(home, 'hearthd.sock');
  const snapshotBuilds = async () =>
    (await readdir(join(home, 'snapshots')).catch(() => [] as string[])).filter((name) =>
      name.startsWith('.build-'),
    );

  async function startDaemon(): Promise<ChildProcess> {
    const entry = fileURLToPath(new URL('../../src/server/main.js', import.meta.url));
    const daemon = spawn(process.execPath, [entry], {
      env: { ...process.env, HEARTH_HOME: home, HEARTH_LOG_LEVEL: 'warn' },
      stdio: 'ignore',
    });
    for (let attempt = 0; attempt < 600; attempt++) {
      if (await isHealthy({ socketPath: socketPath() })) return daemon;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    daemon.kill('SIGKILL');
    throw new Error('hearthd did not start within 60 s');
  }

  before(async () => {
    home = await mkdtemp(join(tmpdir(), 'hearth-crash-'));
    await symlink(join(hearthHome(), 'images'), join(home, 'images'));
    await copyFile(join(hearthHome(), 'accel.json'), join(home, 'accel.json')).catch(
      () => undefined,
    );
  });

  after(async () => {
    child?.kill('SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 2000));
    for (const pid of await qemuProcessesUnder(home)) process.kill(pid, 'SIGKILL');
    await rm(home, { recursive: true, force: true });
  });

  it('cleans up after kill -9 and marks the session lost', async () => {
    child = await startDaemon();
    const target = { socketPath: socketPath() };
    const session = await createSession(target);
    const alive = await execute(target, session.id, { code: 'print("before crash")' });
    assert.equal(alive.stdout, 'before crash\n');
    // The session's VM, and any warm pool or snapshot template VMs of the default settings.
    const pidsBefore = await qemuProcessesUnder(home);
    const vmDirsBefore = await readdir(join(home, 'run', 'vms'));
    const snapshotBuildsBefore = await snapshotBuilds();
    assert.ok(pidsBefore.length >= 1);

    child.kill('SIGKILL');
    await new Promise((resolve) => child!.once('exit', resolve));
    const survivors = await qemuProcessesUnder(home);
    assert.ok(
      pidsBefore.every((pid) => survivors.includes(pid)),
      'the VMs outlive a killed hearthd',
    );

    child = await startDaemon();
    const pidsAfter = await qemuProcessesUnder(home);
    assert.deepEqual(
      pidsBefore.filter((pid) => pidsAfter.includes(pid)),
      [],
      'the restarted hearthd ended every VM of the old one',
    );
    const vmDirsAfter = await readdir(join(home, 'run', 'vms'));
    assert.deepEqual(
      vmDirsBefore.filter((dir) => vmDirsAfter.includes(dir)),
      [],
      'the restarted hearthd removed every run directory of the old one',
    );
    const snapshotBuildsAfter = await snapshotBuilds();
    assert.deepEqual(
      snapshotBuildsBefore.filter((dir) => snapshotBuildsAfter.includes(dir)),
      [],
      'the restarted hearthd removed the unfinished snapshot builds of the old one',
    );
    const info = (await callApi(target, 'GET', `/v1/sessions/${session.id}`)) as {
      state: string;
      close_reason: string;
    };
    assert.equal(info.state, 'closed');
    assert.equal(info.close_reason, 'lost');
    const error = await rejection(execute(target, session.id, { code: 'print(1)' }));
    assert.equal(error.code, 'session_lost');
    assert.equal(error.status, 410);

    child.kill('SIGTERM');
    await new Promise((resolve) => child!.once('exit', resolve));
    child = null;
    assert.deepEqual(await qemuProcessesUnder(home), []);
    assert.deepEqual(await readdir(join(home, 'run', 'vms')), []);
  });
});
