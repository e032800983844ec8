import { open } from 'node:fs/promises';
import { HearthError } from '../errors.js';

/** How often a TTY heartbeat redraws the elapsed time. */
const TTY_HEARTBEAT_MS = 1_000;
/** How often a non-TTY heartbeat prints a line: often enough to show life, rare enough for CI. */
const PLAIN_HEARTBEAT_MS = 30_000;
/** Log lines quoted in a failure message: enough to show a compiler error and its context. */
const LOG_TAIL_LINES = 20;
/** Bytes read from the end of a log to find its last lines. */
const LOG_TAIL_BYTES = 64 * 1024;

/** A stream that progress lines go to, such as process.stdout. */
export interface ProgressOutput {
  write(text: string): unknown;
  isTTY?: boolean;
}

export interface ProgressOptions {
  /** Number of steps the whole run will take; shown as the N in "[2/N]". */
  total: number;
  /** Defaults to process.stdout. */
  output?: ProgressOutput;
  /** Redraws the heartbeat in place on one line. Defaults to whether `output` is a TTY. */
  interactive?: boolean;
  /** Milliseconds between heartbeats. Defaults to 1 s on a TTY and 30 s otherwise. */
  heartbeatMs?: number;
}

/** Lets a running step report its state to the person watching. */
export interface StepContext {
  /** Marks the step as satisfied by an earlier result; `detail` is shown after "cached". */
  markCached(detail?: string): void;
  /** Sets the phase shown in heartbeats, e.g. "compiling vmlinux". */
  setStatus(status: string): void;
  /** Prints one line of information under the step's header. */
  info(message: string): void;
}

/** A step that threw. The message names the step and the log, and quotes the log's last lines. */
export class StepFailedError extends HearthError {
  constructor(
    readonly step: string,
    readonly logPath: string | undefined,
    readonly logTail: string[],
    options: { cause: unknown },
  ) {
    super('setup_step_failed', formatFailure(step, logPath, logTail, options.cause));
    this.name = 'StepFailedError';
    this.cause = options.cause;
  }
}

/**
 * Prints numbered steps ("[2/4] Building guest kernel") with a heartbeat while each runs,
 * and a closing line with the elapsed time, "cached" or "failed".
 */
export class Progress {
  readonly total: number;
  private readonly output: ProgressOutput;
  private readonly interactive: boolean;
  private readonly heartbeatMs: number;
  private stepCount = 0;

  constructor(options: ProgressOptions) {
    this.total = options.total;
    this.output = options.output ?? process.stdout;
    this.interactive = options.interactive ?? this.output.isTTY === true;
    this.heartbeatMs =
      options.heartbeatMs ?? (this.interactive ? TTY_HEARTBEAT_MS : PLAIN_HEARTBEAT_MS);
  }

  /**
   * Runs `run` as the next numbered step and returns its result. If `run` throws, this
   * throws a StepFailedError that wraps the error and quotes the end of `logPath`.
   */
  async step<T>(
    title: string,
    logPath: string | undefined,
    run: (context: StepContext) => Promise<T>,
  ): Promise<T> {
    this.stepCount += 1;
    const label = `[${this.stepCount}/${this.total}] ${title}`;
    const startedAt = Date.now();
    let status = 'running';
    let cachedDetail: string | undefined;
    let cached = false;
    let heartbeatShown = false;

    const clearHeartbeat = (): void => {
      if (heartbeatShown) {
        this.output.write('\r\x1b[2K');
        heartbeatShown = false;
      }
    };
    const beat = (): void => {
      const elapsed = formatDuration(Date.now() - startedAt);
      if (this.interactive) {
        this.output.write(`\r\x1b[2K    ${status}, ${elapsed} elapsed`);
        heartbeatShown = true;
      } else {
        this.output.write(`${label}: ${status}, ${elapsed} elapsed\n`);
      }
    };
    const context: StepContext = {
      markCached: (detail) => {
        cached = true;
        cachedDetail = detail;
      },
      setStatus: (text) => {
        status = text;
      },
      info: (message) => {
        clearHeartbeat();
        this.output.write(`    ${message}\n`);
      },
    };

    this.output.write(logPath === undefined ? `${label}\n` : `${label} (log: ${logPath})\n`);
    const timer = setInterval(beat, this.heartbeatMs);
    timer.unref();
    try {
      const result = await run(context);
      clearInterval(timer);
      clearHeartbeat();
      const elapsed = formatDuration(Date.now() - startedAt);
      const outcome = cached ? describeCached(cachedDetail, elapsed) : `done in ${elapsed}`;
      this.output.write(`${label}: ${outcome}\n`);
      return result;
    } catch (error) {
      clearInterval(timer);
      clearHeartbeat();
      this.output.write(`${label}: failed after ${formatDuration(Date.now() - startedAt)}\n`);
      const tail = logPath === undefined ? [] : await readLogTail(logPath, LOG_TAIL_LINES);
      throw new StepFailedError(title, logPath, tail, { cause: error });
    }
  }
}

/** Formats milliseconds for people: "0.4s", "12s", "3m 05s". */
export function formatDuration(ms: number): string {
  if (ms < 10_000) {
    return `${(ms / 1000).toFixed(1)}s`;
  }
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) {
    return `${seconds}s`;
  }
  const minutes = Math.floor(seconds / 60);
  return `${minutes}m ${String(seconds % 60).padStart(2, '0')}s`;
}

/** Returns up to `lineCount` last lines of a log, or none if the file cannot be read. */
export async function readLogTail(path: string, lineCount: number): Promise<string[]> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch {
    return [];
  }
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, LOG_TAIL_BYTES);
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, size - length);
    const lines = buffer.toString('utf8').split('\n');
    if (lines.at(-1) === '') {
      lines.pop();
    }
    return lines.slice(-lineCount);
  } finally {
    await handle.close();
  }
}

function describeCached(detail: string | undefined, elapsed: string): string {
  return detail === undefined ? `cached, ${elapsed}` : `cached, ${elapsed} (${detail})`;
}

function formatFailure(
  step: string,
  logPath: string | undefined,
  tail: string[],
  cause: unknown,
): string {
  const reason = cause instanceof Error ? cause.message : String(cause);
  const lines = [`${step} failed: ${reason}`];
  if (logPath !== undefined) {
    lines.push(`Full log: ${logPath}`);
  }
  if (tail.length > 0) {
    lines.push(`Last ${tail.length} lines of the log:`);
    lines.push(...tail.map((line) => `  | ${line}`));
  }
  return lines.join('\n');
}
