import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import {
  formatDuration,
  Progress,
  readLogTail,
  StepFailedError,
} from '../../src/image/progress.js';

/** Carriage return plus the ANSI sequence that erases the line. */
const CLEAR_LINE = '\r\u001b[2K';

/** Collects what a Progress writes. */
function captureOutput(isTTY: boolean): {
  write(text: string): void;
  isTTY: boolean;
  text: string;
} {
  return {
    isTTY,
    text: '',
    write(chunk: string) {
      this.text += chunk;
    },
  };
}

describe('Progress', () => {
  it('numbers steps and reports completion', async () => {
    const output = captureOutput(false);
    const progress = new Progress({ total: 3, output });

    const result = await progress.step('First', '/logs/first.log', async () => 42);
    await progress.step('Second', undefined, async () => undefined);

    assert.equal(result, 42);
    const lines = output.text.trimEnd().split('\n');
    assert.equal(lines[0], '[1/3] First (log: /logs/first.log)');
    assert.match(lines[1] ?? '', /^\[1\/3\] First: done in \d+\.\ds$/);
    assert.equal(lines[2], '[2/3] Second');
    assert.match(lines[3] ?? '', /^\[2\/3\] Second: done in /);
  });

  it('reports a cached step with its detail', async () => {
    const output = captureOutput(false);
    const progress = new Progress({ total: 1, output });

    await progress.step('Kernel', undefined, async (step) => step.markCached('/images/k-1'));

    assert.match(output.text, /\[1\/1\] Kernel: cached, \d+\.\ds \(\/images\/k-1\)\n$/);
  });

  it('prints heartbeat lines with the status when not a TTY', async () => {
    const output = captureOutput(false);
    const progress = new Progress({ total: 1, output, heartbeatMs: 20 });

    await progress.step('Slow', undefined, async (step) => {
      step.setStatus('compiling');
      await sleep(70);
    });

    assert.match(output.text, /\[1\/1\] Slow: compiling, \d+\.\ds elapsed\n/);
    assert.doesNotMatch(output.text, /\r/);
  });

  it('redraws one line on a TTY and clears it at the end', async () => {
    const output = captureOutput(true);
    const progress = new Progress({ total: 1, output, heartbeatMs: 20 });

    await progress.step('Slow', undefined, async () => sleep(70));

    assert.ok(output.text.includes(`${CLEAR_LINE}    running, `), JSON.stringify(output.text));
    assert.ok(
      output.text.includes(`${CLEAR_LINE}[1/1] Slow: done in `),
      JSON.stringify(output.text),
    );
  });

  it('wraps a failure with the step, the log and its tail', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hearth-progress-'));
    try {
      const logPath = join(dir, 'step.log');
      const logLines = Array.from({ length: 30 }, (_, index) => `line ${index + 1}`);
      await writeFile(logPath, `${logLines.join('\n')}\n`);
      const output = captureOutput(false);
      const progress = new Progress({ total: 2, output });

      const failure = await progress
        .step('Building guest kernel', logPath, async () => {
          throw new Error('"make vmlinux" exited with code 2.');
        })
        .catch((error: unknown) => error);

      assert.ok(failure instanceof StepFailedError);
      assert.equal(failure.code, 'setup_step_failed');
      assert.equal(failure.step, 'Building guest kernel');
      assert.equal(failure.logPath, logPath);
      assert.deepEqual(failure.logTail, logLines.slice(10));
      assert.match(failure.message, /^Building guest kernel failed: "make vmlinux" exited/);
      assert.match(failure.message, new RegExp(`Full log: ${logPath}`));
      assert.match(failure.message, /\n {2}\| line 30$/);
      assert.doesNotMatch(failure.message, /\| line 10\n/);
      assert.match(output.text, /\[1\/2\] Building guest kernel: failed after /);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('formatDuration', () => {
  it('formats short, medium and long durations', () => {
    assert.equal(formatDuration(400), '0.4s');
    assert.equal(formatDuration(12_400), '12s');
    assert.equal(formatDuration(185_000), '3m 05s');
  });
});

describe('readLogTail', () => {
  it('returns no lines for a missing log', async () => {
    assert.deepEqual(await readLogTail('/nonexistent/hearth.log', 5), []);
  });
});
