// The main job through the CLI, one process per command, as a user runs it.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { hearthHome } from '../../src/config.js';
import { qemuProcessesUnder } from '../helpers/hearthd.js';

const CLI = fileURLToPath(new URL('../../../bin/hearth.js', import.meta.url));

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

describe('hearth CLI', () => {
  let home: string;

  const hearth = (...args: string[]): Promise<CliRun> =>
    new Promise((resolve) => {
      execFile(
        process.execPath,
        [CLI, ...args],
        {
          // Without a warm pool, the only VM is the session's, so "nothing left" is exact.
          env: { ...process.env, HEARTH_HOME: home, HEARTH_POOL_SIZE: '0', HEARTH_SNAPSHOTS: '0' },
          timeout: 300_000,
        },
        (error, stdout, stderr) => {
          const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
          resolve({ code, stdout, stderr });
        },
      );
    });

  before(async () => {
    // A home of its own, sharing only the images that setup built.
    home = await mkdtemp(join(tmpdir(), 'hearth-cli-'));
    await symlink(join(hearthHome(), 'images'), join(home, 'images'));
    await copyFile(join(hearthHome(), 'accel.json'), join(home, 'accel.json')).catch(
      () => undefined,
    );
  });

  after(async () => {
    await hearth('server', 'stop');
    await rm(home, { recursive: true, force: true });
  });

  it('prints the guest Python version', async () => {
    const run = await hearth('execute', '--code', 'import sys; print(sys.version)');
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^3\.11\.\d+ /);
  });

  it('keeps Python variables between invocations', async () => {
    const assign = await hearth('execute', '--code', 'x = 41');
    assert.equal(assign.code, 0, assign.stderr);
    assert.equal(assign.stdout, '');
    const read = await hearth('execute', '--code', 'print(x + 1)');
    assert.equal(read.code, 0, read.stderr);
    assert.equal(read.stdout, '42\n');
  });

  it('keeps the Bash directory and exports between invocations', async () => {
    const set = await hearth('execute', '--language', 'bash', '--code', 'cd /tmp && export A=1');
    assert.equal(set.code, 0, set.stderr);
    const read = await hearth('execute', '--language', 'bash', '--code', 'pwd; echo $A; uname -r');
    assert.equal(read.code, 0, read.stderr);
    const [cwd, value, release] = read.stdout.trimEnd().split('\n');
    assert.equal(cwd, '/tmp');
    assert.equal(value, '1');
    assert.match(release ?? '', /^6\.1\.\d+-hearth$/);
  });

  it('prints the whole result with --json', async () => {
    const run = await hearth('execute', '--json', '--code', 'print(1)');
    assert.equal(run.code, 0, run.stderr);
    const result = JSON.parse(run.stdout);
    assert.equal(result.stdout, '1\n');
    assert.equal(result.status, 'ok');
    assert.equal(result.exit_code, 0);
    assert.equal(typeof result.execution_time, 'number');
  });

  it('exits 1 with the traceback for a Python exception', async () => {
    const run = await hearth('execute', '--code', 'print("before")\nraise ValueError("bad")');
    assert.equal(run.code, 1);
    assert.equal(run.stdout, 'before\n');
    assert.match(run.stderr, /Traceback/);
    assert.match(run.stderr, /ValueError: bad/);
  });

  it("exits with the Bash program's exit code", async () => {
    const run = await hearth(
      'execute',
      '--language',
      'bash',
      '--code',
      'echo out; echo err >&2; exit 3',
    );
    assert.equal(run.code, 3);
    assert.equal(run.stdout, 'out\n');
    assert.equal(run.stderr, 'err\n');
  });

  it('reports a bad option with a stable code', async () => {
    const run = await hearth('execute', '--language', 'ruby', '--code', '1');
    assert.equal(run.code, 2);
    assert.match(run.stderr, /error \[invalid_arguments\]/);
  });

  it('reports a rejected large upload by its code', async () => {
    const local = join(home, 'large.bin');
    await writeFile(local, Buffer.alloc(3 * 1024 * 1024, 7));
    const run = await hearth('upload', local, 'root/relative.bin');
    assert.equal(run.code, 1);
    assert.match(run.stderr, /error \[invalid_path\]/);
    assert.doesNotMatch(run.stderr, /EPIPE|PREMATURE_CLOSE|\n\s+at /);
  });

  it('leaves nothing behind after session close', async () => {
    const close = await hearth('session', 'close');
    assert.equal(close.code, 0, close.stderr);
    assert.match(close.stdout, /^closed ses_/);
    assert.deepEqual(await qemuProcessesUnder(home), []);
    assert.deepEqual(await readdir(join(home, 'run', 'vms')), []);
  });

  it('starts a new session after the current one closed', async () => {
    const run = await hearth('execute', '--code', 'print("x" in globals())');
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, 'False\n');
  });

  it('leaves nothing behind after server stop', async () => {
    const stop = await hearth('server', 'stop');
    assert.equal(stop.code, 0, stop.stderr);
    assert.equal(stop.stdout, 'hearthd stopped\n');
    assert.deepEqual(await qemuProcessesUnder(home), []);
    assert.deepEqual(await readdir(join(home, 'run', 'vms')), []);
    assert.deepEqual(
      (await readdir(home)).filter((name) => name.startsWith('hearthd.sock')),
      [],
    );
  });
});
