// hearthd's REST API against real VMs.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ExecuteEvent } from '../../src/api/schema.js';
import { callApi, openStream } from '../../src/cli/client.js';
import {
  createSession,
  execute,
  leftoverVms,
  qemuProcessesUnder,
  rejection,
  startTestHearthd,
  type CreatedSession,
  type TestHearthd,
} from '../helpers/hearthd.js';

describe('REST API', () => {
  let server: TestHearthd;
  let session: CreatedSession;

  before(async () => {
    server = await startTestHearthd();
    session = await createSession(server.target, { cpu_count: 2, memory_mb: 1024 });
  });

  after(async () => {
    await server.close();
  });

  it('creates a session with the requested resources', async () => {
    assert.match(session.id, /^ses_[0-9a-f]{16}$/);
    assert.equal(session.cpu_count, 2);
    assert.equal(session.memory_mb, 1024);
    assert.ok(session.boot_ms > 0);
    assert.match(session.accelerator, /^(kvm|tcg)$/);
    assert.match(session.kernel_release, /-hearth$/);
  });

  it('gives the guest the requested vCPUs and memory', async () => {
    const result = await execute(server.target, session.id, {
      language: 'bash',
      code: "nproc; python3 -c 'import os; print(os.cpu_count())'; grep MemTotal /proc/meminfo",
    });
    const [nproc, cpuCount, memTotal] = result.stdout.trimEnd().split('\n');
    assert.equal(nproc, '2');
    assert.equal(cpuCount, '2');
    const memoryKib = Number(/(\d+) kB/.exec(memTotal ?? '')?.[1]);
    assert.ok(memoryKib > 900 * 1024, `MemTotal ${memoryKib} kB`);
    assert.ok(memoryKib <= 1024 * 1024, `MemTotal ${memoryKib} kB`);
  });

  it('returns the whole result contract', async () => {
    const result = await execute(server.target, session.id, {
      code: 'import sys\nprint("out")\nprint("err", file=sys.stderr)',
    });
    assert.equal(result.status, 'ok');
    assert.equal(result.stdout, 'out\n');
    assert.equal(result.stderr, 'err\n');
    assert.equal(result.exit_code, 0);
    assert.equal(result.error, null);
    assert.equal(result.truncated, false);
    assert.equal(result.stdout_bytes, 4);
    assert.equal(result.stderr_bytes, 4);
    assert.ok(result.execution_time > 0);
    assert.ok(result.execution_time < 30);
  });

  it('reports a Python exception with name, value and traceback', async () => {
    const result = await execute(server.target, session.id, { code: 'x = 1\n1 / 0' });
    assert.equal(result.status, 'error');
    assert.equal(result.exit_code, 1);
    assert.equal(result.error?.name, 'ZeroDivisionError');
    assert.equal(result.error?.value, 'division by zero');
    assert.match(result.error?.traceback ?? '', /line 2/);
  });

  it('streams the same bytes as the buffered form', async () => {
    const code =
      'import sys, time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.1)\nsys.stderr.write("done")';
    const buffered = await execute(server.target, session.id, { code });
    const stream = await openStream(server.target, 'POST', `/v1/sessions/${session.id}/execute`, {
      code,
    });
    let text = '';
    for await (const chunk of stream) text += (chunk as Buffer).toString('utf8');
    const events = text
      .trimEnd()
      .split('\n')
      .map((line) => JSON.parse(line) as ExecuteEvent);
    const stdout = events.flatMap((event) => (event.type === 'stdout' ? [event.data] : []));
    const stderr = events.flatMap((event) => (event.type === 'stderr' ? [event.data] : []));
    assert.ok(stdout.length >= 2, 'stdout should arrive in several events');
    assert.equal(stdout.join(''), buffered.stdout);
    assert.equal(stderr.join(''), buffered.stderr);
    const last = events.at(-1);
    assert.equal(last?.type, 'result');
    assert.equal(last?.type === 'result' && last.result.stdout, buffered.stdout);
  });

  it('rejects unknown fields with invalid_request', async () => {
    const error = await rejection(
      callApi(server.target, 'POST', `/v1/sessions/${session.id}/execute`, {
        code: '1',
        colour: 'blue',
      }),
    );
    assert.equal(error.code, 'invalid_request');
    assert.equal(error.status, 400);
    assert.match(error.message, /colour/);
  });

  it('rejects out-of-range resources with invalid_request', async () => {
    const error = await rejection(createSession(server.target, { cpu_count: 9 }));
    assert.equal(error.code, 'invalid_request');
    assert.match(error.message, /cpu_count/);
  });

  it('answers 404 session_not_found for an unknown id', async () => {
    const error = await rejection(callApi(server.target, 'GET', '/v1/sessions/ses_nope'));
    assert.equal(error.code, 'session_not_found');
    assert.equal(error.status, 404);
  });

  it('removes the VM on close and rejects later calls', async () => {
    const short = await createSession(server.target);
    await callApi(server.target, 'DELETE', `/v1/sessions/${short.id}`);
    const info = (await callApi(server.target, 'GET', `/v1/sessions/${short.id}`)) as {
      state: string;
    };
    assert.equal(info.state, 'closed');
    const error = await rejection(execute(server.target, short.id, { code: 'print(1)' }));
    assert.equal(error.code, 'session_closed');
    const remaining = await leftoverVms(server.runDir);
    assert.equal(remaining.length, 1, `only the suite's own VM should remain: ${remaining}`);
  });

  it('closes every VM on shutdown', async () => {
    await createSession(server.target);
    assert.equal((await qemuProcessesUnder(server.runDir)).length, 2);
    await server.hearthd.close();
    assert.deepEqual(await qemuProcessesUnder(server.runDir), []);
    assert.deepEqual(await leftoverVms(server.runDir), []);
  });
});
