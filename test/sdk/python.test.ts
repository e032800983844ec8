// Runs the Python SDK's unittest suite (sdk/python/tests) under Debian's python3, which has
// no third-party packages, so the SDK is checked to need only the standard library.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const PYTHON = process.env.HEARTH_TEST_PYTHON ?? '/usr/bin/python3';
// The suite boots two VMs and moves about 30 MiB; under TCG it takes well under a minute.
const SUITE_TIMEOUT_MS = 600_000;

it(
  'passes the Python SDK unittest suite',
  { skip: !existsSync(PYTHON) && `no ${PYTHON}` },
  async (t) => {
    const run = await new Promise<{ code: number | null; output: string }>((resolve) => {
      const child = execFile(
        PYTHON,
        ['-m', 'unittest', 'discover', '-s', 'sdk/python/tests', '-v'],
        {
          cwd: ROOT,
          env: { ...process.env, HEARTH_TEST_NODE: process.execPath, PYTHONDONTWRITEBYTECODE: '1' },
          timeout: SUITE_TIMEOUT_MS,
          maxBuffer: 64 * 1024 * 1024,
        },
        (error, stdout, stderr) => {
          let code: number | null = 0;
          if (error) code = typeof error.code === 'number' ? error.code : null;
          resolve({ code, output: stdout + stderr });
        },
      );
      child.stdin?.end();
    });

    // unittest prints its verdict last, e.g. "Ran 24 tests in 12.1s" and "OK".
    const summary = run.output
      .split('\n')
      .filter((line) => line.trim())
      .slice(-2)
      .join(' | ');
    t.diagnostic(summary);
    assert.equal(run.code, 0, `the Python SDK suite failed (exit ${run.code}):\n${run.output}`);
  },
);
