// `npm run bench`: measures hearth's start and call latency on this machine, each figure
// also as a ratio to a bare QEMU boot of the same kernel measured in the same run.
// `npm run bench -- --json` prints one JSON object instead of the table.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { hearthHome } from '../src/config.js';
import { findImages } from '../src/image/index.js';
import { bootVm, type BootedVm } from '../src/sessions/vm.js';
import { chooseAcceleration } from '../src/vmm/accel.js';
import { QemuDriver, qemuArguments, type Acceleration } from '../src/vmm/qemu.js';

interface Figure {
  value: number;
  unit: string;
  /** value divided by the bare boot's median, when the figure is a time. */
  ratio_to_bare_boot?: number;
  samples: number;
}

const { values: flags } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    boots: { type: 'string', default: '5' },
    calls: { type: 'string', default: '50' },
  },
});
const bootCount = Number(flags.boots);
const callCount = Number(flags.calls);

function percentile(samples: number[], fraction: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1);
  return sorted[Math.max(0, index)]!;
}

function log(message: string): void {
  if (!flags.json) process.stderr.write(message + '\n');
}

/** Boots the kernel with init=/bin/true and times QEMU from spawn to exit: the kernel
 * panics as soon as its init exits, and panic=-1 with -no-reboot ends QEMU. */
async function bareBootMs(
  images: { kernelPath: string; rootfsPath: string },
  acceleration: Acceleration,
  runDir: string,
): Promise<number> {
  const args = qemuArguments(
    {
      vmId: 'bare',
      kernelPath: images.kernelPath,
      rootfsPath: images.rootfsPath,
      scratchPath: '/dev/null',
      cpuCount: 1,
      memoryMib: 512,
      runDir,
    },
    acceleration,
  ).map((arg) => arg.replace('init=/usr/lib/hearth/init', 'init=/bin/true'));
  const startedAt = performance.now();
  await new Promise<void>((resolve, reject) => {
    const child = spawn('qemu-system-x86_64', args, { stdio: 'ignore' });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.once('error', reject);
  });
  return performance.now() - startedAt;
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
  const runRoot = await mkdtemp(join(tmpdir(), 'hearth-bench-'));
  const driver = new QemuDriver({ acceleration });
  const bootOptions = {
    cpuCount: 1,
    memoryMib: 512,
    diskMib: 1024,
    env: {},
    runRoot,
    logDir: join(runRoot, 'logs'),
    bootTimeoutMs: 120_000,
  };

  try {
    log(`accelerator: ${acceleration.accelerator} (${acceleration.reason})`);
    const bare: number[] = [];
    for (let i = 0; i < bootCount; i++) bare.push(await bareBootMs(images, acceleration, runRoot));
    const bareMedian = percentile(bare, 0.5);
    log(`bare boot to init: ${bare.map((ms) => ms.toFixed(0)).join(', ')} ms`);

    const readyTimes: number[] = [];
    let warm: BootedVm | null = null;
    for (let i = 0; i < bootCount; i++) {
      const booted = await bootVm(driver, images, bootOptions);
      readyTimes.push(booted.bootMs);
      if (i < bootCount - 1) await booted.destroy();
      else warm = booted;
    }
    log(`start to agent ready: ${readyTimes.map((ms) => ms.toFixed(0)).join(', ')} ms`);

    const vm = warm!;
    const request = {
      code: 'print(1)',
      language: 'python' as const,
      timeout_seconds: 10,
      env: {},
      cwd: null,
      output_limit_bytes: 1 << 20,
    };
    for (let i = 0; i < 5; i++) await vm.agent.execute(request); // warm the kernel's caches
    const executeTimes: number[] = [];
    const pingTimes: number[] = [];
    for (let i = 0; i < callCount; i++) {
      let startedAt = performance.now();
      await vm.agent.ping(Buffer.from('ping'));
      pingTimes.push(performance.now() - startedAt);
      startedAt = performance.now();
      const outcome = await vm.agent.execute(request);
      executeTimes.push(performance.now() - startedAt);
      if (outcome.stdout.toString() !== '1\n')
        throw new Error('print(1) returned the wrong output');
    }
    await vm.destroy();

    const figure = (samples: number[], fraction: number, ratio: boolean): Figure => {
      const value = Math.round(percentile(samples, fraction) * 100) / 100;
      const result: Figure = { value, unit: 'ms', samples: samples.length };
      if (ratio) result.ratio_to_bare_boot = Math.round((value / bareMedian) * 1000) / 1000;
      return result;
    };
    const executeP50 = percentile(executeTimes, 0.5);
    const pingP50 = percentile(pingTimes, 0.5);
    const report = {
      machine: {
        cpus: cpus().length,
        cpu_model: cpus()[0]?.model ?? 'unknown',
        accelerator: acceleration.accelerator,
      },
      bare_boot_to_init_ms_p50: figure(bare, 0.5, true),
      start_to_agent_ready_ms_p50: figure(readyTimes, 0.5, true),
      start_to_agent_ready_ms_p95: figure(readyTimes, 0.95, true),
      warm_print_round_trip_ms_p50: figure(executeTimes, 0.5, true),
      warm_print_round_trip_ms_p95: figure(executeTimes, 0.95, true),
      raw_channel_round_trip_ms_p50: figure(pingTimes, 0.5, true),
      warm_round_trip_to_raw_channel_ratio: {
        value: Math.round((executeP50 / pingP50) * 100) / 100,
        unit: 'ratio',
        samples: callCount,
      },
    };

    if (flags.json) {
      process.stdout.write(JSON.stringify(report, null, 2) + '\n');
      return;
    }
    process.stdout.write(
      `\nhearth bench (${report.machine.cpus} x ${report.machine.cpu_model}, ` +
        `${acceleration.accelerator})\n\n`,
    );
    const rows: [string, Figure][] = [
      ['bare QEMU boot to init (P50)', report.bare_boot_to_init_ms_p50],
      ['VM start to agent ready (P50)', report.start_to_agent_ready_ms_p50],
      ['VM start to agent ready (P95)', report.start_to_agent_ready_ms_p95],
      ['warm print(1) round trip (P50)', report.warm_print_round_trip_ms_p50],
      ['warm print(1) round trip (P95)', report.warm_print_round_trip_ms_p95],
      ['raw agent channel round trip (P50)', report.raw_channel_round_trip_ms_p50],
    ];
    for (const [name, value] of rows) {
      const ratio = value.ratio_to_bare_boot;
      process.stdout.write(
        `${name.padEnd(38)} ${value.value.toFixed(2).padStart(9)} ms   ` +
          `${ratio === undefined ? '' : `${ratio.toFixed(3)}x bare boot`}\n`,
      );
    }
    process.stdout.write(
      `${'warm round trip / raw channel'.padEnd(38)} ` +
        `${report.warm_round_trip_to_raw_channel_ratio.value.toFixed(2).padStart(9)}x\n`,
    );
  } finally {
    await rm(runRoot, { recursive: true, force: true });
  }
}

await main();
