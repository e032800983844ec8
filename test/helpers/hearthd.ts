import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { callApi, type Target } from '../../src/cli/client.js';
import { hearthHome } from '../../src/config.js';
import { HearthError } from '../../src/errors.js';
import { startHearthd, type HearthdConfig, type RunningHearthd } from '../../src/server/hearthd.js';

export interface TestHearthd {
  target: Target;
  hearthd: RunningHearthd;
  runDir: string;
  close(): Promise<void>;
}

/**
 * Starts an in-process hearthd on a temporary socket and run directory, with the guest
 * images that ./setup.sh built under HEARTH_HOME (or ~/.hearth).
 */
export async function startTestHearthd(
  overrides: Partial<HearthdConfig> = {},
): Promise<TestHearthd> {
  const runDir = await mkdtemp(join(tmpdir(), 'hearth-test-'));
  const listen = join(runDir, 'hearthd.sock');
  let hearthd: RunningHearthd;
  try {
    hearthd = await startHearthd({
      home: hearthHome(),
      runDir,
      listen,
      accel: process.env.HEARTH_ACCEL ?? 'auto',
      vmm: process.env.HEARTH_VMM ?? 'qemu',
      bootTimeoutMs: 120_000,
      maxQueuedExecutions: 4,
      logger: pino({ level: process.env.HEARTH_TEST_LOG_LEVEL ?? 'silent' }),
      dbPath: join(runDir, 'hearth.db'),
      requireKey: false,
      defaultLifetimeSeconds: 3600,
      maxLifetimeSeconds: 86400,
      maxUploadBytes: 512 * 1024 * 1024,
      poolSize: 0,
      snapshots: false,
      snapshotDir: join(runDir, 'snapshots'),
      ...overrides,
    });
  } catch (error) {
    await rm(runDir, { recursive: true, force: true });
    throw error;
  }
  return {
    target: { socketPath: listen },
    hearthd,
    runDir,
    close: async () => {
      await hearthd.close();
      await rm(runDir, { recursive: true, force: true });
    },
  };
}

/** Lists VM run directories still present under a test hearthd's run directory. */
export async function leftoverVms(runDir: string): Promise<string[]> {
  try {
    return await readdir(join(runDir, 'vms'));
  } catch {
    return [];
  }
}

/** Pids of QEMU processes whose command line mentions the given directory. */
export async function qemuProcessesUnder(dir: string): Promise<number[]> {
  const { readFile } = await import('node:fs/promises');
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const commandLine = await readFile(`/proc/${entry}/cmdline`, 'utf8');
      if (commandLine.startsWith('qemu-system') && commandLine.includes(dir)) {
        pids.push(Number(entry));
      }
    } catch {
      // the process exited while we looked
    }
  }
  return pids;
}

export interface CreatedSession {
  id: string;
  cpu_count: number;
  memory_mb: number;
  accelerator: string;
  boot_ms: number;
  kernel_release: string;
}

export async function createSession(
  target: Target,
  body: Record<string, unknown> = {},
): Promise<CreatedSession> {
  return (await callApi(target, 'POST', '/v1/sessions', body)) as CreatedSession;
}

export async function execute(
  target: Target,
  sessionId: string,
  body: Record<string, unknown>,
): Promise<import('../../src/api/schema.js').ExecuteResult> {
  return (await callApi(
    target,
    'POST',
    `/v1/sessions/${sessionId}/execute`,
    body,
  )) as import('../../src/api/schema.js').ExecuteResult;
}

/** Awaits a call that must fail with a hearth error, and returns that error. */
export async function rejection(promise: Promise<unknown>): Promise<HearthError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof HearthError) return error;
    throw error;
  }
  assert.fail('expected the call to be rejected');
}
