// `npm run bench`: measures hearth's start and call latency and its memory on this machine,
// with each time also as a ratio to a bare QEMU boot of the same kernel, measured in the same
// run. `npm run bench -- --json` prints one JSON object instead of the table.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { callApi, type Target } from '../src/cli/client.js';
import { hearthHome } from '../src/config.js';
import { findImages } from '../src/image/index.js';
import { DEFAULT_SHAPE, startHearthd, type RunningHearthd } from '../src/server/hearthd.js';
import { bootVm } from '../src/sessions/vm.js';
import { chooseAcceleration } from '../src/vmm/accel.js';
import { QemuDriver } from '../src/vmm/qemu.js';
import { bareBootMs } from './bare-boot.js';
import { figure, percentile, ratioFigure, type Figure } from './figures.js';

const { values: flags } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    samples: { type: 'string', default: '5' },
    calls: { type: 'string', default: '50' },
    concurrent: { type: 'string', default: '50' },
  },
});
const sampleCount = Number(flags.samples);
const callCount = Number(flags.calls);
const concurrentCount = Number(flags.concurrent);

// The targets: a snapshot restore at most a quarter of a bare boot, a pool hit at most 2%,
// a warm call at most 1.3x the raw channel, and an idle VM holding at most half its memory.
const TARGETS = { snapshot: 0.25, pool: 0.02, warmToRaw: 1.3, idleMemory: 0.5 };

function log(message: string): void {
  if (!flags.json) process.stderr.write(message + '\n');
}

interface Service {
  hearthd: RunningHearthd;
  target: Target;
  runDir: string;
}

async function startService(options: { snapshots: boolean; poolSize: number }): Promise<Service> {
  const runDir = await mkdtemp(join(tmpdir(), 'hearth-bench-'));
  const listen = join(runDir, 'hearthd.sock');
  const hearthd = await startHearthd({
    home: hearthHome(),
    runDir,
    listen,
    accel: process.env.HEARTH_ACCEL ?? 'auto',
    vmm: 'qemu',
    bootTimeoutMs: 180_000,
    maxQueuedExecutions: 16,
    logger: pino({ level: 'silent' }),
    dbPath: join(runDir, 'hearth.db'),
    requireKey: false,
    defaultLifetimeSeconds: 3600,
    maxLifetimeSeconds: 86400,
    maxUploadBytes: 1 << 20,
    poolSize: options.poolSize,
    snapshots: options.snapshots,
    snapshotDir: join(runDir, 'snapshots'),
  });
  return { hearthd, target: { socketPath: listen }, runDir };
}

async function stopService(service: Service): Promise<void> {
  await service.hearthd.close();
  await rm(service.runDir, { recursive: true, force: true });
}

/** Times one session from the create call to the result of its first print(1). */
async function createToFirstResult(
  target: Target,
): Promise<{ ms: number; id: string; path: string }> {
  const startedAt = performance.now();
  const session = (await callApi(target, 'POST', '/v1/sessions', {})) as {
    id: string;
    start_path: string;
  };
  const result = (await callApi(target, 'POST', `/v1/sessions/${session.id}/execute`, {
    code: 'print(1)',
  })) as { stdout: string };
  if (result.stdout !== '1\n') throw new Error('print(1) returned the wrong output');
  return { ms: performance.now() - startedAt, id: session.id, path: session.start_path };
}

async function measurePath(
  service: Service,
  expected: string,
  beforeEach: () => Promise<void> = async () => undefined,
): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < sampleCount; i++) {
    await beforeEach();
    const { ms, id, path } = await createToFirstResult(service.target);
    if (path !== expected) throw new Error(`expected a ${expected} start, got ${path}`);
    samples.push(ms);
    await callApi(service.target, 'DELETE', `/v1/sessions/${id}`);
  }
  return samples;
}

/** Proportional set size of the VMM processes under a run directory, in MiB each. */
async function idleVmPssMib(runDir: string, count: number): Promise<number[]> {
  const { readdir } = await import('node:fs/promises');
  const values: number[] = [];
  for (const vm of (await readdir(join(runDir, 'vms'))).slice(0, count)) {
    const pid = (await readFile(join(runDir, 'vms', vm, 'vmm.pid'), 'utf8')).trim();
    const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
    const kib = Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1] ?? NaN);
    values.push(kib / 1024);
  }
  return values;
}

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the warm pool to fill');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function main(): Promise<void> {
  const home = hearthHome();
  const images = await findImages(home);
  if (!images) throw new Error(`No guest images under ${home}; run ./setup.sh first.`);
  const acceleration = await chooseAcceleration({
    home,
    images,
    override: process.env.HEARTH_ACCEL,
  });
  log(`accelerator: ${acceleration.accelerator} (${acceleration.reason})`);

  const bareRunDir = await mkdtemp(join(tmpdir(), 'hearth-bench-bare-'));
  const bare: number[] = [];
  for (let i = 0; i < sampleCount; i++)
    bare.push(await bareBootMs(images, acceleration, bareRunDir));
  const bareMedian = percentile(bare, 0.5);
  log(`bare boot to init: ${bare.map((ms) => ms.toFixed(0)).join(', ')} ms`);

  // The raw channel against a warm call, on one VM, without the HTTP layer in either.
  const driver = new QemuDriver({ acceleration });
  const booted = await bootVm(driver, images, {
    ...DEFAULT_SHAPE,
    env: {},
    runRoot: bareRunDir,
    logDir: join(bareRunDir, 'logs'),
    bootTimeoutMs: 180_000,
  });
  const agentReadyMs = booted.bootMs;
  const request = {
    code: 'print(1)',
    language: 'python' as const,
    timeout_seconds: 10,
    env: {},
    cwd: null,
    output_limit_bytes: 1 << 20,
  };
  for (let i = 0; i < 5; i++) await booted.agent.execute(request);
  const executeTimes: number[] = [];
  const pingTimes: number[] = [];
  for (let i = 0; i < callCount; i++) {
    let startedAt = performance.now();
    await booted.agent.ping(Buffer.from('ping'));
    pingTimes.push(performance.now() - startedAt);
    startedAt = performance.now();
    await booted.agent.execute(request);
    executeTimes.push(performance.now() - startedAt);
  }
  await booted.destroy();
  await rm(bareRunDir, { recursive: true, force: true });
  log(`agent ready ${agentReadyMs.toFixed(0)} ms; warm call and raw channel measured`);

  const bootService = await startService({ snapshots: false, poolSize: 0 });
  const bootSamples = await measurePath(bootService, 'boot');
  const bootPss = await (async () => {
    const session = await createToFirstResult(bootService.target);
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const pss = await idleVmPssMib(bootService.runDir, 1);
    await callApi(bootService.target, 'DELETE', `/v1/sessions/${session.id}`);
    return pss;
  })();
  await stopService(bootService);
  log(`fresh boot: ${bootSamples.map((ms) => ms.toFixed(0)).join(', ')} ms`);

  const snapshotService = await startService({ snapshots: true, poolSize: 0 });
  if (!(await snapshotService.hearthd.snapshots!.ensure(DEFAULT_SHAPE))) {
    throw new Error('the snapshot could not be built');
  }
  const snapshotSamples = await measurePath(snapshotService, 'snapshot');
  const idleIds: string[] = [];
  for (let i = 0; i < 3; i++) idleIds.push((await createToFirstResult(snapshotService.target)).id);
  await new Promise((resolve) => setTimeout(resolve, 3000));
  const snapshotPss = await idleVmPssMib(snapshotService.runDir, 3);
  for (const id of idleIds) await callApi(snapshotService.target, 'DELETE', `/v1/sessions/${id}`);
  await stopService(snapshotService);
  log(`snapshot restore: ${snapshotSamples.map((ms) => ms.toFixed(0)).join(', ')} ms`);

  const poolSize = 2;
  const poolService = await startService({ snapshots: true, poolSize });
  const pool = poolService.hearthd.pool!;
  await poolService.hearthd.snapshots!.ensure(DEFAULT_SHAPE);
  // Each sample starts with the pool full, so that no refill competes with it for the CPU.
  const poolSamples = await measurePath(poolService, 'pool', () =>
    waitFor(() => pool.idleCount >= poolSize, 120_000),
  );
  log(`pool hit: ${poolSamples.map((ms) => ms.toFixed(0)).join(', ')} ms`);

  await waitFor(() => pool.idleCount >= poolSize, 120_000);
  const concurrentStartedAt = performance.now();
  const outcomes = await Promise.allSettled(
    Array.from({ length: concurrentCount }, () => createToFirstResult(poolService.target)),
  );
  const concurrentSeconds = (performance.now() - concurrentStartedAt) / 1000;
  const failures = outcomes.filter((outcome) => outcome.status === 'rejected').length;
  await Promise.allSettled(
    outcomes.flatMap((outcome) =>
      outcome.status === 'fulfilled'
        ? [callApi(poolService.target, 'DELETE', `/v1/sessions/${outcome.value.id}`)]
        : [],
    ),
  );
  await stopService(poolService);
  log(
    `${concurrentCount} concurrent sessions: ${failures} failed, ${concurrentSeconds.toFixed(1)} s`,
  );

  const memoryMib = DEFAULT_SHAPE.memoryMib;
  const idleRatio = percentile(snapshotPss, 0.5) / memoryMib;
  const warmToRaw = percentile(executeTimes, 0.5) / percentile(pingTimes, 0.5);
  const report = {
    machine: {
      cpus: cpus().length,
      cpu_model: cpus()[0]?.model ?? 'unknown',
      memory_gib: Math.round(totalmem() / 2 ** 30),
      accelerator: acceleration.accelerator,
    },
    bare_boot_to_init_ms_p50: figure(bare, 0.5, bareMedian),
    agent_ready_ms: {
      value: Math.round(agentReadyMs),
      unit: 'ms',
      ratio_to_bare_boot: Math.round((agentReadyMs / bareMedian) * 1000) / 1000,
    },
    boot_to_first_result_ms_p50: figure(bootSamples, 0.5, bareMedian),
    boot_to_first_result_ms_p95: figure(bootSamples, 0.95, bareMedian),
    snapshot_to_first_result_ms_p50: figure(snapshotSamples, 0.5, bareMedian),
    snapshot_to_first_result_ms_p95: figure(snapshotSamples, 0.95, bareMedian, TARGETS.snapshot),
    pool_to_first_result_ms_p50: figure(poolSamples, 0.5, bareMedian),
    pool_to_first_result_ms_p95: figure(poolSamples, 0.95, bareMedian, TARGETS.pool),
    warm_print_round_trip_ms_p50: figure(executeTimes, 0.5, bareMedian),
    raw_channel_round_trip_ms_p50: figure(pingTimes, 0.5, bareMedian),
    warm_round_trip_to_raw_channel: ratioFigure(warmToRaw, TARGETS.warmToRaw),
    idle_session_pss_mib_snapshot: { value: Math.round(percentile(snapshotPss, 0.5)), unit: 'MiB' },
    idle_session_pss_mib_boot: { value: Math.round(percentile(bootPss, 0.5)), unit: 'MiB' },
    idle_session_memory_ratio: ratioFigure(idleRatio, TARGETS.idleMemory),
    concurrent_sessions: {
      count: concurrentCount,
      failures: { value: failures, target: 0, met: failures === 0 },
      total_seconds: Math.round(concurrentSeconds * 10) / 10,
    },
  };

  if (flags.json) {
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    return;
  }
  printTable(report, bareMedian);
}

function printTable(
  report: Record<string, unknown> & { machine: Record<string, unknown> },
  bareMedian: number,
) {
  const { machine } = report;
  process.stdout.write(
    `\nhearth bench: ${machine.cpus} x ${machine.cpu_model}, ${machine.memory_gib} GiB, ` +
      `${machine.accelerator}; bare boot P50 ${bareMedian.toFixed(0)} ms\n\n`,
  );
  for (const [name, value] of Object.entries(report)) {
    if (name === 'machine' || name === 'concurrent_sessions') continue;
    const entry = value as Figure;
    const ratio =
      entry.ratio_to_bare_boot === undefined ? '' : `${entry.ratio_to_bare_boot.toFixed(3)}x bare`;
    const target =
      entry.target === undefined ? '' : `target ${entry.target}  ${entry.met ? 'met' : 'NOT met'}`;
    const shown =
      entry.unit === 'ratio'
        ? `${entry.value.toFixed(3)}x`
        : `${entry.value.toFixed(1)} ${entry.unit}`;
    process.stdout.write(
      `${name.padEnd(36)} ${shown.padStart(12)}  ${ratio.padEnd(14)} ${target}\n`,
    );
  }
  const concurrent = report.concurrent_sessions as {
    count: number;
    failures: { value: number; met: boolean };
    total_seconds: number;
  };
  process.stdout.write(
    `${'concurrent sessions'.padEnd(36)} ${String(concurrent.count).padStart(12)}  ` +
      `${concurrent.failures.value} failed, ${concurrent.total_seconds} s in all  ` +
      `target 0 failures  ${concurrent.failures.met ? 'met' : 'NOT met'}\n`,
  );
}

await main();
