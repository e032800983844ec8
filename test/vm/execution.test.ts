// The execute result contract and its edge cases, each against a real VM.
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { buildWheel } from '../helpers/wheel.js';
import {
  createSession,
  execute,
  rejection,
  startTestHearthd,
  type CreatedSession,
  type TestHearthd,
} from '../helpers/hearthd.js';

const bash = (code: string, extra: Record<string, unknown> = {}) => ({
  language: 'bash',
  code,
  ...extra,
});

describe('execution semantics', () => {
  let server: TestHearthd;
  let session: CreatedSession;
  const run = (body: Record<string, unknown>) => execute(server.target, session.id, body);

  before(async () => {
    server = await startTestHearthd();
    session = await createSession(server.target, {
      env: { SESSION_VAR: 'from-session' },
    });
  });

  after(async () => {
    await server.close();
  });

  describe('output bytes', () => {
    it('keeps print output byte-exact', async () => {
      const result = await run({ code: 'print(5); print(5); print("tail", end="")' });
      assert.equal(result.stdout, '5\n5\ntail');
    });

    it('keeps carriage returns from printf', async () => {
      const result = await run(bash("printf '10%%\\r50%%\\r100%%\\n'"));
      assert.equal(result.stdout, '10%\r50%\r100%\n');
    });

    it('replaces invalid UTF-8 with U+FFFD', async () => {
      const result = await run({
        code: 'import sys; sys.stdout.buffer.write(b"A\\xff\\xfeB\\n")',
        raw_output: true,
      });
      assert.equal(result.stdout, 'A\uFFFD\uFFFDB\n');
      assert.deepEqual(
        Buffer.from(result.stdout_base64 ?? '', 'base64'),
        Buffer.from([0x41, 0xff, 0xfe, 0x42, 0x0a]),
      );
    });

    it('joins a character split across writes', async () => {
      const code = [
        'import sys, time',
        'sys.stdout.buffer.write(b"\\xe2"); sys.stdout.flush()',
        'time.sleep(0.3)',
        'sys.stdout.buffer.write(b"\\x82\\xac"); sys.stdout.flush()',
      ].join('\n');
      const result = await run({ code });
      assert.equal(result.stdout, '€');
    });

    it('runs with a UTF-8 locale', async () => {
      const result = await run(bash('locale charmap'));
      assert.equal(result.stdout, 'UTF-8\n');
    });
  });

  describe('huge output', () => {
    it('caps 50 MB of Python output and reports the total', async () => {
      const rssBefore = process.memoryUsage().rss;
      const result = await run({
        code: "import sys; sys.stdout.write('x' * 50_000_000)",
        output_limit_bytes: 1 << 20,
        timeout_seconds: 120,
      });
      assert.equal(result.status, 'ok');
      assert.equal(result.truncated, true);
      assert.equal(result.stdout_bytes, 50_000_000);
      assert.equal(result.stdout.length, 1 << 20);
      const growthMib = (process.memoryUsage().rss - rssBefore) / (1 << 20);
      assert.ok(growthMib < 64, `hearthd grew by ${growthMib.toFixed(1)} MiB`);
    });

    it('caps endless output from yes until the timeout', async () => {
      const result = await run(bash('yes', { timeout_seconds: 5, output_limit_bytes: 1 << 20 }));
      assert.equal(result.status, 'timeout');
      assert.equal(result.truncated, true);
      assert.ok(result.stdout_bytes > 1 << 20);
      assert.equal(result.stdout.length, 1 << 20);
    });

    it('runs the next call normally', async () => {
      const result = await run(bash('echo ok'));
      assert.equal(result.stdout, 'ok\n');
      assert.equal(result.truncated, false);
    });
  });

  describe('timeouts', () => {
    it('keeps output printed before a Bash timeout', async () => {
      const result = await run(bash('echo started; sleep 600', { timeout_seconds: 2 }));
      assert.equal(result.status, 'timeout');
      assert.equal(result.stdout, 'started\n');
    });

    it('interrupts Python and keeps its variables', async () => {
      await run({ code: 'kept = 7' });
      const result = await run({
        code: 'import time\nprint("started", flush=True)\ntime.sleep(600)',
        timeout_seconds: 2,
      });
      assert.equal(result.status, 'timeout');
      assert.equal(result.stdout, 'started\n');
      assert.equal(result.kernel_restarted, false);
      assert.equal(result.error?.name, 'KeyboardInterrupt');
      const after = await run({ code: 'print(kept)' });
      assert.equal(after.stdout, '7\n');
    });

    it('restarts a Python kernel that ignores the interrupt', async () => {
      const result = await run({
        code: [
          'import time',
          'while True:',
          '    try:',
          '        time.sleep(100)',
          '    except KeyboardInterrupt:',
          '        pass',
        ].join('\n'),
        timeout_seconds: 2,
      });
      assert.equal(result.status, 'timeout');
      assert.equal(result.kernel_restarted, true);
      assert.match(result.error?.value ?? '', /restarted/);
      const after = await run({ code: 'print("fresh", "kept" in globals())' });
      assert.equal(after.stdout, 'fresh False\n');
    });

    it('kills the whole Bash tree, setsid escapes included', async () => {
      const startedAt = performance.now();
      const result = await run(
        bash("trap '' TERM INT; sleep 300 & setsid sleep 301 & sleep 302", { timeout_seconds: 2 }),
      );
      const elapsedSeconds = (performance.now() - startedAt) / 1000;
      assert.equal(result.status, 'timeout');
      assert.ok(elapsedSeconds < 5, `took ${elapsedSeconds.toFixed(1)} s`);
      const count = await run(bash("pgrep -c -f 'sleep 30[012]'"));
      assert.equal(count.stdout, '0\n');
    });
  });

  describe('background processes', () => {
    it('returns while a background server keeps running', async () => {
      const startedAt = performance.now();
      const start = await run(bash('python3 -m http.server 8000 >/dev/null 2>&1 & echo started'));
      const elapsedMs = performance.now() - startedAt;
      assert.equal(start.stdout, 'started\n');
      assert.ok(elapsedMs < 1000, `took ${elapsedMs.toFixed(0)} ms`);
      const probe = await run(
        bash(
          'for i in $(seq 100); do ' +
            "code=$(curl -s -o /dev/null -w '%{http_code}' localhost:8000) && break; " +
            'sleep 0.2; done; echo "$code"',
          { timeout_seconds: 60 },
        ),
      );
      assert.equal(probe.stdout, '200\n');
    });

    it('does not hold the call open for a silent background job', async () => {
      const startedAt = performance.now();
      const result = await run(bash('sleep 30 & echo quick'));
      assert.equal(result.stdout, 'quick\n');
      assert.ok(performance.now() - startedAt < 5000);
    });
  });

  describe('stdin', () => {
    it('gives Python EOF at once', async () => {
      const result = await run({ code: 'input()', timeout_seconds: 10 });
      assert.equal(result.status, 'error');
      assert.equal(result.error?.name, 'EOFError');
    });

    it('gives Bash an empty read', async () => {
      const result = await run(bash('read -r x; echo "got:[$x] rc=$?"'));
      assert.equal(result.stdout, 'got:[] rc=1\n');
    });
  });

  describe('shell state and env', () => {
    it('keeps the directory and exports between Bash calls', async () => {
      await run(bash('cd /tmp && export FOO=bar'));
      const result = await run(bash('pwd; echo "$FOO"'));
      assert.equal(result.stdout, '/tmp\nbar\n');
    });

    it('rejects a missing cwd and runs nothing', async () => {
      const error = await rejection(run(bash('touch /root/ran-anyway', { cwd: '/no/such/dir' })));
      assert.equal(error.code, 'cwd_not_found');
      assert.match(error.message, /\/no\/such\/dir/);
      const check = await run(bash('test -e /root/ran-anyway && echo ran || echo absent'));
      assert.equal(check.stdout, 'absent\n');
    });

    it('runs a call in the given cwd', async () => {
      const result = await run(bash('pwd', { cwd: '/usr' }));
      assert.equal(result.stdout, '/usr\n');
      const python = await run({ code: 'import os; print(os.getcwd())', cwd: '/etc' });
      assert.equal(python.stdout, '/etc\n');
    });

    it('passes session env to Python, Bash and subprocesses', async () => {
      const python = await run({
        code: 'import os, subprocess\nprint(os.environ["SESSION_VAR"])\nsubprocess.run(["sh", "-c", "echo $SESSION_VAR"])',
      });
      assert.equal(python.stdout, 'from-session\nfrom-session\n');
      const shell = await run(bash('echo "$SESSION_VAR"; sh -c \'echo "$SESSION_VAR"\''));
      assert.equal(shell.stdout, 'from-session\nfrom-session\n');
    });

    it('applies per-call env to that call only', async () => {
      const python = await run({
        code: 'import os; print(os.environ.get("CALL_VAR"))',
        env: { CALL_VAR: 'one' },
      });
      assert.equal(python.stdout, 'one\n');
      const pythonAfter = await run({ code: 'import os; print(os.environ.get("CALL_VAR"))' });
      assert.equal(pythonAfter.stdout, 'None\n');
      const shell = await run(bash('echo "[$CALL_VAR]"', { env: { CALL_VAR: 'two' } }));
      assert.equal(shell.stdout, '[two]\n');
      const shellAfter = await run(bash('echo "[$CALL_VAR]"'));
      assert.equal(shellAfter.stdout, '[]\n');
    });
  });

  describe('one interpreter', () => {
    it('imports in Python what pip installed from Bash', async () => {
      const wheel = buildWheel('hearth_probe', '1.0', 'VALUE = "wheel works"\n');
      const install = await run(
        bash(
          `echo '${wheel.contents.toString('base64')}' | base64 -d > /tmp/${wheel.fileName} && ` +
            `pip install --no-index --quiet /tmp/${wheel.fileName} && ` +
            'python3 -c "import sys; print(sys.executable)"',
          { timeout_seconds: 120 },
        ),
      );
      assert.equal(install.exit_code, 0, install.stderr);
      const imported = await run({
        code: 'import sys, hearth_probe\nprint(hearth_probe.VALUE)\nprint(sys.executable)',
      });
      assert.equal(imported.status, 'ok', imported.error?.traceback);
      const [value, executable] = imported.stdout.trimEnd().split('\n');
      assert.equal(value, 'wheel works');
      assert.equal(executable, install.stdout.trimEnd());
    });
  });

  describe('errors and exit codes', () => {
    it('reports a missing command as 127', async () => {
      const result = await run(bash('nosuchcmd_xyz'));
      assert.equal(result.exit_code, 127);
      assert.match(result.stderr, /command not found/);
    });

    it('reports the Bash exit code', async () => {
      const result = await run(bash('exit 3'));
      assert.equal(result.exit_code, 3);
      assert.equal(result.status, 'error');
    });

    it('reports the signal that killed Bash', async () => {
      const result = await run(bash('kill -9 $$'));
      assert.equal(result.signal, 9);
      assert.equal(result.exit_code, 137);
    });

    it('reports sys.exit as SystemExit and keeps the session', async () => {
      await run({ code: 'survivor = "yes"' });
      const result = await run({ code: 'import sys; sys.exit(3)' });
      assert.equal(result.status, 'error');
      assert.equal(result.exit_code, 3);
      assert.equal(result.error?.name, 'SystemExit');
      assert.equal(result.error?.value, '3');
      const after = await run({ code: 'print(survivor)' });
      assert.equal(after.stdout, 'yes\n');
    });

    it('reports a SyntaxError line and runs nothing', async () => {
      const result = await run({ code: 'print("ran")\nx = (' });
      assert.equal(result.stdout, '');
      assert.equal(result.error?.name, 'SyntaxError');
      assert.match(result.error?.traceback ?? '', /line 2/);
    });
  });

  describe('concurrency', () => {
    it('serialises two calls on one session', async () => {
      const slow = run({
        code: 'import time\nfor i in range(5):\n    print("a", i, flush=True)\n    time.sleep(0.1)',
      });
      const fast = run({ code: 'print("b")' });
      const [first, second] = await Promise.all([slow, fast]);
      assert.equal(first.stdout, 'a 0\na 1\na 2\na 3\na 4\n');
      assert.equal(second.stdout, 'b\n');
      assert.ok(second.timing.queued_ms > 200, `queued ${second.timing.queued_ms} ms`);
    });
  });

  describe('hostile input', () => {
    it('runs the largest allowed program', async () => {
      // 1 MiB of quotes, which JSON escaping doubles on the way to the guest.
      const code = '# ' + '"'.repeat(1024 * 1024 - 2);
      const result = await run({ code, timeout_seconds: 120 });
      assert.equal(result.status, 'ok', result.error?.value);
      const after = await run({ code: 'print("alive")' });
      assert.equal(after.stdout, 'alive\n');
    });

    it('keeps results in order with tiny Python timeouts', async () => {
      for (let round = 0; round < 5; round++) {
        await run({ code: `print("call-${round}")`, timeout_seconds: 0.001 });
        const check = await run({ code: `print("check-${round}")` });
        assert.equal(check.stdout, `check-${round}\n`, `round ${round}`);
        assert.equal(check.status, 'ok');
      }
    });

    it('survives code that writes into the reply pipe', async () => {
      const code = [
        'import os, stat, fcntl',
        'for name in os.listdir("/proc/self/fd"):',
        '    fd = int(name)',
        '    try:',
        '        mode = os.fstat(fd).st_mode',
        '        writable = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY',
        '    except OSError:',
        '        continue',
        '    if fd > 2 and stat.S_ISFIFO(mode) and writable:',
        '        os.write(fd, b"\\x00\\x10\\x00\\x00")',
        'import time',
        'time.sleep(100)',
      ].join('\n');
      const startedAt = performance.now();
      const result = await run({ code, timeout_seconds: 30 });
      assert.ok(performance.now() - startedAt < 20_000, 'the call ended well before its timeout');
      assert.equal(result.kernel_restarted, true);
      assert.equal(result.error?.name, 'KernelDied');
      const after = await run({ code: 'print("alive")' });
      assert.equal(after.stdout, 'alive\n');
    });

    it('restores closed stdout and stderr', async () => {
      const closing = await run({ code: 'import os, sys\nsys.stdout.close()\nos.close(2)' });
      assert.equal(closing.status, 'ok');
      const after = await run({ code: 'import sys\nprint("out")\nprint("err", file=sys.stderr)' });
      assert.equal(after.stdout, 'out\n');
      assert.equal(after.stderr, 'err\n');
    });

    it('flushes redirected output to its file', async () => {
      const code = [
        'import os',
        'fd = os.open("/tmp/redirected.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)',
        'os.dup2(fd, 1)',
        'print("to-file")',
      ].join('\n');
      const redirected = await run({ code });
      assert.equal(redirected.stdout, '');
      const file = await run({ code: 'print(open("/tmp/redirected.txt").read(), end="")' });
      assert.equal(file.stdout, 'to-file\n');
    });

    it('survives code that closes the saved pipe copies', async () => {
      const code = [
        'import os',
        'pipes = {(os.fstat(n).st_dev, os.fstat(n).st_ino) for n in (1, 2)}',
        'for name in os.listdir("/proc/self/fd"):',
        '    fd = int(name)',
        '    try:',
        '        info = os.fstat(fd)',
        '    except OSError:',
        '        continue',
        '    if fd > 2 and (info.st_dev, info.st_ino) in pipes:',
        '        os.close(fd)',
      ].join('\n');
      await run({ code });
      const later = await run({ code: 'print("hi")' });
      assert.equal(later.stdout, 'hi\n');
      const again = await run({ code: 'print("again")' });
      assert.equal(again.stdout, 'again\n');
    });

    it('enforces a tiny Bash timeout', async () => {
      const startedAt = performance.now();
      const result = await run(bash('sleep 15; echo survived', { timeout_seconds: 0.01 }));
      assert.equal(result.status, 'timeout');
      assert.equal(result.stdout, '');
      assert.ok(performance.now() - startedAt < 10_000);
    });
  });

  describe('client disconnects', () => {
    for (const [language, code] of [
      ['python', 'import time\nprint("started", flush=True)\ntime.sleep(120)'],
      ['bash', 'echo started; sleep 120'],
    ]) {
      it(`stops a ${language} call whose client left`, async () => {
        await new Promise<void>((resolve, reject) => {
          const request = httpRequest(
            {
              socketPath: server.target.socketPath,
              method: 'POST',
              path: `/v1/sessions/${session.id}/execute`,
              headers: { 'content-type': 'application/json', accept: 'application/x-ndjson' },
            },
            (response) => {
              // Leave as soon as the code has started.
              response.once('data', () => {
                request.destroy();
                resolve();
              });
            },
          );
          request.once('error', () => undefined);
          request.setTimeout(60_000, () => reject(new Error('the call never started')));
          request.end(JSON.stringify({ code, language, timeout_seconds: 300 }));
        });
        const startedAt = performance.now();
        const next = await run({ code: 'print("next")' });
        const waitedSeconds = (performance.now() - startedAt) / 1000;
        assert.equal(next.stdout, 'next\n');
        assert.ok(waitedSeconds < 15, `the next call waited ${waitedSeconds.toFixed(1)} s`);
      });
    }
  });

  describe('limits', () => {
    it('reports the vCPU count in nproc and os.cpu_count', async () => {
      const result = await run(bash('nproc; python3 -c "import os; print(os.cpu_count())"'));
      assert.equal(result.stdout, '1\n1\n');
    });

    it('fixes address layouts under TCG only', async () => {
      const result = await run(bash('cat /proc/sys/kernel/randomize_va_space'));
      const tcg = server.hearthd.acceleration.accelerator === 'tcg';
      assert.equal(result.stdout, tcg ? '0\n' : '2\n');
    });

    it('runs a ProcessPoolExecutor', async () => {
      const result = await run({
        code: 'from concurrent.futures import ProcessPoolExecutor\nwith ProcessPoolExecutor(2) as pool:\n    print(list(pool.map(abs, [-1, -2])))',
        timeout_seconds: 60,
      });
      assert.equal(result.status, 'ok', result.error?.traceback);
      assert.equal(result.stdout, '[1, 2]\n');
    });
  });
});
