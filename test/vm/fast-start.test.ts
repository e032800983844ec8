// Sessions started from a snapshot or the warm pool, against real VMs.
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { callApi } from '../../src/cli/client.js';
import { DEFAULT_SHAPE } from '../../src/server/hearthd.js';
import { buildWheel } from '../helpers/wheel.js';
import {
  createSession,
  execute,
  rejection,
  startTestHearthd,
  type TestHearthd,
} from '../helpers/hearthd.js';

interface StartedSession {
  id: string;
  start_path: string;
  boot_ms: number;
}

const start = async (server: TestHearthd, body: Record<string, unknown> = {}) =>
  (await createSession(server.target, body)) as unknown as StartedSession;

const close = (server: TestHearthd, id: string) =>
  callApi(server.target, 'DELETE', `/v1/sessions/${id}`);

function upload(socketPath: string, sessionId: string, path: string, data: Buffer) {
  return new Promise<number>((resolve, reject) => {
    const request = httpRequest(
      {
        socketPath,
        method: 'PUT',
        path: `/v1/sessions/${sessionId}/files?path=${encodeURIComponent(path)}`,
        headers: { 'content-type': 'application/octet-stream', 'content-length': data.length },
      },
      (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      },
    );
    request.once('error', reject);
    request.end(data);
  });
}

describe('snapshot restore', () => {
  let server: TestHearthd;

  before(async () => {
    server = await startTestHearthd({ snapshots: true, poolSize: 0 });
    assert.ok(await server.hearthd.snapshots!.ensure(DEFAULT_SHAPE), 'the snapshot was built');
  });

  after(async () => {
    await server.close();
  });

  it('restores a session that behaves like a booted one', async () => {
    const session = await start(server, { env: { GREETING: 'restored' } });
    assert.equal(session.start_path, 'snapshot');

    await execute(server.target, session.id, { code: 'counter = 41' });
    const variables = await execute(server.target, session.id, {
      code: 'import os\nprint(counter + 1, os.environ["GREETING"])',
    });
    assert.equal(variables.stdout, '42 restored\n');

    const status = await upload(
      server.target.socketPath!,
      session.id,
      '/root/in.txt',
      Buffer.from('file'),
    );
    assert.equal(status, 201);
    const files = await execute(server.target, session.id, {
      language: 'bash',
      code: 'cat /root/in.txt',
    });
    assert.equal(files.stdout, 'file');

    const wheel = buildWheel('restored_probe', '1.0', 'VALUE = 7\n');
    const install = await execute(server.target, session.id, {
      language: 'bash',
      code:
        `echo '${wheel.contents.toString('base64')}' | base64 -d > /tmp/${wheel.fileName} && ` +
        `pip install --no-index --quiet /tmp/${wheel.fileName}`,
      timeout_seconds: 120,
    });
    assert.equal(install.exit_code, 0, install.stderr);
    const imported = await execute(server.target, session.id, {
      code: 'import restored_probe; print(restored_probe.VALUE)',
    });
    assert.equal(imported.stdout, '7\n');

    const clock = await execute(server.target, session.id, {
      code: 'import time; print(time.time())',
    });
    const skewSeconds = Math.abs(Number(clock.stdout) - Date.now() / 1000);
    assert.ok(skewSeconds < 2, `the guest clock is ${skewSeconds.toFixed(2)} s off`);
    await close(server, session.id);
  });

  it('gives each restored session its own random state', async () => {
    const code =
      'import os, random, uuid\nprint(os.urandom(8).hex(), random.random(), uuid.uuid4())';
    const first = await start(server);
    const second = await start(server);
    assert.equal(first.start_path, 'snapshot');
    assert.equal(second.start_path, 'snapshot');
    const a = await execute(server.target, first.id, { code });
    const b = await execute(server.target, second.id, { code });
    const [urandomA, randomA, uuidA] = a.stdout.trim().split(' ');
    const [urandomB, randomB, uuidB] = b.stdout.trim().split(' ');
    assert.notEqual(urandomA, urandomB);
    assert.notEqual(randomA, randomB);
    assert.notEqual(uuidA, uuidB);
    const shell = 'head -c 8 /dev/urandom | od -An -tx1 | tr -d " \\n"';
    const shellA = await execute(server.target, first.id, { language: 'bash', code: shell });
    const shellB = await execute(server.target, second.id, { language: 'bash', code: shell });
    assert.notEqual(shellA.stdout, shellB.stdout);
    await close(server, first.id);
    await close(server, second.id);
  });

  it('keeps the writes of sessions from one snapshot apart', async () => {
    const first = await start(server);
    const second = await start(server);
    await execute(server.target, first.id, {
      language: 'bash',
      code: 'echo first > /root/mine.txt && echo changed > /etc/motd',
    });
    const seen = await execute(server.target, second.id, {
      language: 'bash',
      code: 'test -e /root/mine.txt && echo leaked || echo absent; cat /etc/motd | head -c 7',
    });
    assert.equal(seen.stdout.split('\n')[0], 'absent');
    assert.notEqual(seen.stdout.split('\n')[1], 'changed');
    await close(server, first.id);
    await close(server, second.id);
  });

  it('keeps a scratch copy for the next restore', async () => {
    const session = await start(server);
    assert.equal(session.start_path, 'snapshot');
    const dir = join(server.runDir, 'snapshots', server.hearthd.snapshots!.key(DEFAULT_SHAPE));
    const spares = async () =>
      (await readdir(dir)).filter((name) => name.startsWith(`spare-${process.pid}-`));
    for (let attempt = 0; attempt < 50 && (await spares()).length === 0; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const [spare] = await spares();
    assert.ok(spare, 'a spare copy was made');

    const next = await start(server);
    assert.equal(next.start_path, 'snapshot');
    assert.ok(!(await spares()).includes(spare), 'the next restore used the spare copy');
    const written = await execute(server.target, next.id, {
      language: 'bash',
      code: 'echo kept > /root/kept.txt && cat /root/kept.txt',
    });
    assert.equal(written.stdout, 'kept\n');
    await close(server, session.id);
    await close(server, next.id);
  });

  it('reports a network greeting the guest cannot apply', async () => {
    // This hearthd has no network service, so the restored guest has no eth0 to configure.
    const booted = await server.hearthd.snapshots!.restore(DEFAULT_SHAPE, {});
    try {
      const error = await rejection(
        booted.agent.hello(
          {},
          {
            address: '100.96.0.2',
            prefix: 30,
            gateway: '100.96.0.1',
            macAddress: '02:68:74:00:00:00',
            packageFiles: {},
          },
        ),
      );
      assert.equal(error.code, 'network_setup_failed');
      assert.match(error.message, /eth0/);
      const after = await booted.agent.execute({
        code: 'print("still serving")',
        language: 'python',
        timeout_seconds: 30,
        env: {},
        cwd: null,
        output_limit_bytes: 1024,
      });
      assert.equal(after.stdout.toString(), 'still serving\n');
    } finally {
      await booted.destroy();
    }
  });

  it('detects a broken snapshot, boots instead and rebuilds it', async () => {
    const store = server.hearthd.snapshots!;
    const statePath = join(server.runDir, 'snapshots', store.key(DEFAULT_SHAPE), 'state');
    const state = await readFile(statePath);
    const index = state.length - 100;
    state[index] = state[index]! ^ 0xff;
    await writeFile(statePath, state);
    assert.equal(await store.has(DEFAULT_SHAPE), false);

    const booted = await start(server);
    assert.equal(booted.start_path, 'boot');
    const result = await execute(server.target, booted.id, { code: 'print("booted")' });
    assert.equal(result.stdout, 'booted\n');
    await close(server, booted.id);

    assert.ok(await store.ensure(DEFAULT_SHAPE));
    const restored = await start(server);
    assert.equal(restored.start_path, 'snapshot');
    await close(server, restored.id);
  });

  it('boots a shape that has no snapshot', async () => {
    const session = await start(server, { memory_mb: 640 });
    assert.equal(session.start_path, 'boot');
    await close(server, session.id);
  });
});

describe('warm pool', () => {
  let server: TestHearthd;

  before(async () => {
    server = await startTestHearthd({ snapshots: true, poolSize: 2 });
    await server.hearthd.snapshots!.ensure(DEFAULT_SHAPE);
    for (let attempt = 0; attempt < 300 && server.hearthd.pool!.idleCount < 2; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    assert.equal(server.hearthd.pool!.idleCount, 2, 'the pool filled');
  });

  after(async () => {
    await server.close();
  });

  it('hands each pool VM to one session only', async () => {
    const sessions = await Promise.all([
      start(server),
      start(server),
      start(server),
      start(server),
    ]);
    const paths = sessions.map((session) => session.start_path).sort();
    assert.deepEqual(paths.filter((path) => path === 'pool').length, 2, paths.join());
    for (const session of sessions) {
      await execute(server.target, session.id, {
        language: 'bash',
        code: `echo ${session.id} >> /root/owners`,
      });
    }
    for (const session of sessions) {
      const owners = await execute(server.target, session.id, {
        language: 'bash',
        code: 'cat /root/owners',
      });
      assert.equal(owners.stdout, `${session.id}\n`);
    }
    await Promise.all(sessions.map((session) => close(server, session.id)));
  });

  it('starts a pool session in a fraction of a boot', async () => {
    for (let attempt = 0; attempt < 300 && server.hearthd.pool!.idleCount < 1; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const session = await start(server, { env: { FROM_POOL: 'yes' } });
    assert.equal(session.start_path, 'pool');
    assert.ok(session.boot_ms < 1000, `took ${session.boot_ms} ms`);
    const env = await execute(server.target, session.id, {
      language: 'bash',
      code: 'echo $FROM_POOL; python3 -c "import os; print(os.environ[\'FROM_POOL\'])"',
    });
    assert.equal(env.stdout, 'yes\nyes\n');
    const python = await execute(server.target, session.id, {
      code: 'import os; print(os.environ["FROM_POOL"])',
    });
    assert.equal(python.stdout, 'yes\n');
    await close(server, session.id);
  });

  it('starts a pool session in its HOME', async () => {
    for (let attempt = 0; attempt < 300 && server.hearthd.pool!.idleCount < 1; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const session = await start(server, { env: { HOME: '/tmp' } });
    assert.equal(session.start_path, 'pool');
    const shell = await execute(server.target, session.id, { language: 'bash', code: 'pwd' });
    assert.equal(shell.stdout, '/tmp\n');
    const python = await execute(server.target, session.id, {
      code: 'import os\nprint(os.getcwd())',
    });
    assert.equal(python.stdout, '/tmp\n');
    await close(server, session.id);
  });

  it('resets random state and cell numbers', async () => {
    for (let attempt = 0; attempt < 300 && server.hearthd.pool!.idleCount < 2; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const sessions = [await start(server), await start(server)];
    assert.deepEqual(
      sessions.map((session) => session.start_path),
      ['pool', 'pool'],
    );
    const draws: string[] = [];
    for (const session of sessions) {
      const draw = await execute(server.target, session.id, {
        code: 'import random\nprint(random.random())',
      });
      draws.push(draw.stdout);
      const failure = (await execute(server.target, session.id, { code: '1/0' })) as {
        error: { traceback: string };
      };
      assert.match(failure.error.traceback, /File "<cell 2>", line 1/);
    }
    assert.notEqual(draws[0], draws[1]);
    await Promise.all(sessions.map((session) => close(server, session.id)));
  });
});
