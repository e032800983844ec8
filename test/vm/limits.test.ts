// Resource limits and isolation between sessions, against real VMs.
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { callApi } from '../../src/cli/client.js';
import {
  createSession,
  execute,
  leftoverVms,
  startTestHearthd,
  type TestHearthd,
} from '../helpers/hearthd.js';

const ALLOCATE_1_5_GIB = 'blocks = [b"x" * (100 << 20) for _ in range(15)]';

describe('resource limits', () => {
  let server: TestHearthd;

  before(async () => {
    server = await startTestHearthd();
  });

  after(async () => {
    await server.close();
  });

  it('reports a memory limit in Python, then keeps working', async () => {
    const session = await createSession(server.target, { memory_mb: 1024 });
    const result = await execute(server.target, session.id, {
      code: ALLOCATE_1_5_GIB,
      timeout_seconds: 120,
    });
    assert.equal(result.status, 'error');
    assert.equal(result.error?.name, 'MemoryLimitExceeded');
    assert.match(result.error?.value ?? '', /memory limit/);
    const alive = await execute(server.target, session.id, { code: 'print("alive")' });
    assert.equal(alive.stdout, 'alive\n');

    const shell = await execute(server.target, session.id, {
      language: 'bash',
      code: `python3 -c '${ALLOCATE_1_5_GIB}'`,
      timeout_seconds: 120,
    });
    assert.equal(shell.status, 'error');
    assert.equal(shell.error?.name, 'MemoryLimitExceeded');
    const aliveAgain = await execute(server.target, session.id, { code: 'print("alive")' });
    assert.equal(aliveAgain.stdout, 'alive\n');
    await callApi(server.target, 'DELETE', `/v1/sessions/${session.id}`);
  });

  it('stops writes at the disk quota with ENOSPC', async () => {
    const session = await createSession(server.target, { disk_mb: 128 });
    const [vmId] = await leftoverVms(server.runDir);
    const scratchPath = join(server.runDir, 'vms', vmId!, 'scratch.ext4');
    const result = await execute(server.target, session.id, {
      language: 'bash',
      code: 'dd if=/dev/urandom of=/root/fill bs=1M count=300 2>&1; sync',
      timeout_seconds: 180,
    });
    assert.match(result.stdout, /No space left on device/);
    const usedMib = ((await stat(scratchPath)).blocks * 512) / (1 << 20);
    assert.ok(usedMib <= 130, `the scratch disk takes ${usedMib.toFixed(0)} MiB on the host`);
    const alive = await execute(server.target, session.id, {
      language: 'bash',
      code: 'echo alive',
    });
    assert.equal(alive.stdout, 'alive\n');
    await callApi(server.target, 'DELETE', `/v1/sessions/${session.id}`);
  });

  it('ends a fork bomb and survives it', async () => {
    const session = await createSession(server.target);
    const startedAt = performance.now();
    await execute(server.target, session.id, {
      language: 'bash',
      code: ':(){ :|:& };:',
      timeout_seconds: 10,
    });
    const alive = await execute(server.target, session.id, {
      language: 'bash',
      code: 'echo alive',
      timeout_seconds: 60,
    });
    assert.equal(alive.stdout, 'alive\n');
    // The bomb backgrounds itself, so it outlives its call until the pid-limit guard ends it.
    const settled = await execute(server.target, session.id, {
      language: 'bash',
      code:
        'for i in $(seq 60); do n=$(cat /sys/fs/cgroup/user/*/cgroup.procs | wc -l); ' +
        '[ "$n" -lt 10 ] && break; sleep 1; done; echo "$n"',
      timeout_seconds: 120,
    });
    // Left in the user cgroups: the Python kernel and this call's own few processes.
    assert.ok(Number(settled.stdout) < 10, `${settled.stdout.trim()} user processes remain`);
    // Generous, because a fork storm under TCG on a loaded host is slow; the bound still
    // fails if the bomb is never stopped.
    const elapsedSeconds = (performance.now() - startedAt) / 1000;
    assert.ok(elapsedSeconds < 300, `took ${elapsedSeconds.toFixed(0)} s`);
    await callApi(server.target, 'DELETE', `/v1/sessions/${session.id}`);
  });

  it('keeps twenty sessions in a row apart', async () => {
    const vmsBefore = await leftoverVms(server.runDir);
    for (let round = 0; round < 20; round++) {
      const session = await createSession(server.target);
      const seen = await execute(server.target, session.id, {
        code: [
          'import os',
          'print("secret" in globals(), os.path.exists("/root/secret.txt"))',
          'secret = 1',
          'open("/root/secret.txt", "w").write("mine")',
        ].join('\n'),
      });
      assert.equal(seen.stdout, 'False False\n', `round ${round}`);
      await callApi(server.target, 'DELETE', `/v1/sessions/${session.id}`);
    }
    assert.deepEqual(await leftoverVms(server.runDir), vmsBefore);
  });
});
