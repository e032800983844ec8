import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { once } from 'node:events';
import type { Readable } from 'node:stream';

import type { VmExit } from '../types.js';
import { FirecrackerError } from './errors.js';

/**
 * A kernel boot log is tens of KiB. The cap stops a guest that floods its serial console
 * from filling the host's disk.
 */
export const MAX_CONSOLE_LOG_BYTES = 4 << 20;

/** Appends stdout and stderr of the process to `path`, dropping and counting bytes past the cap. */
class ConsoleLog {
  private readonly file: WriteStream;
  private writtenBytes = 0;
  droppedBytes = 0;

  constructor(path: string) {
    this.file = createWriteStream(path, { flags: 'a' });
    this.file.on('error', () => {
      // A failed log write must not take the VM down, so the bytes are dropped.
    });
  }

  follow(stream: Readable | null): void {
    // Reading continues past the cap, because a full pipe would stall the guest's console.
    stream?.on('data', (chunk: Buffer) => this.append(chunk));
  }

  private append(chunk: Buffer): void {
    const room = MAX_CONSOLE_LOG_BYTES - this.writtenBytes;
    if (room <= 0) {
      this.droppedBytes += chunk.length;
      return;
    }
    const written = chunk.length > room ? chunk.subarray(0, room) : chunk;
    this.file.write(written);
    this.writtenBytes += written.length;
    this.droppedBytes += chunk.length - written.length;
    if (this.writtenBytes >= MAX_CONSOLE_LOG_BYTES) {
      this.file.write(`\n[hearth: console log reached ${MAX_CONSOLE_LOG_BYTES} bytes; dropping]\n`);
    }
  }

  close(): void {
    if (this.droppedBytes > 0) {
      this.file.write(`[hearth: ${this.droppedBytes} console bytes were dropped]\n`);
    }
    this.file.end();
  }
}

/** A running firecracker (or jailer) process whose output goes to a capped log file. */
export class VmmProcess {
  readonly pid: number;
  readonly exited: Promise<VmExit>;
  /** Aborted when the process exits, with a `firecracker_exited` error as the reason. */
  readonly exitSignal: AbortSignal;
  readonly consoleLogPath: string;
  private exit: VmExit | null = null;

  private constructor(
    private readonly child: ChildProcess,
    consoleLogPath: string,
  ) {
    this.pid = child.pid as number;
    this.consoleLogPath = consoleLogPath;
    const aborter = new AbortController();
    this.exitSignal = aborter.signal;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        aborter.abort(
          new FirecrackerError(
            'firecracker_exited',
            `Firecracker (pid ${this.pid}) exited with ${describeExit(this.exit)}. ` +
              `Its console log is ${consoleLogPath}.`,
          ),
        );
        resolve(this.exit);
      });
    });
  }

  /**
   * Starts `command` with its output appended to `consoleLogPath`. Rejects with
   * `firecracker_spawn_failed` when the binary cannot be executed.
   */
  static async spawn(command: string, args: string[], consoleLogPath: string) {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    if (child.pid === undefined) {
      const [error] = (await once(child, 'error')) as [NodeJS.ErrnoException];
      throw new FirecrackerError(
        'firecracker_spawn_failed',
        `Could not start ${command} (${error.code ?? error.message}). Check that it is ` +
          'installed and executable.',
        { cause: error },
      );
    }
    child.on('error', () => {
      // After a successful spawn, errors come from kill(); the exit event still follows.
    });

    const log = new ConsoleLog(consoleLogPath);
    log.follow(child.stdout);
    log.follow(child.stderr);
    // 'close' comes after both pipes end, so no output arrives after the log is closed.
    child.once('close', () => log.close());
    return new VmmProcess(child, consoleLogPath);
  }

  /** The exit status, or null while the process runs. */
  get exitStatus(): VmExit | null {
    return this.exit;
  }

  /** Waits up to `timeoutMs` for the process to exit and returns whether it did. */
  async waitForExit(timeoutMs: number): Promise<boolean> {
    if (this.exit) return true;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    const result = await Promise.race([this.exited.then(() => true), timedOut]);
    clearTimeout(timer);
    return result;
  }

  /** Sends SIGTERM, then SIGKILL if the process is still running after `graceMs`. */
  async terminate(graceMs: number): Promise<VmExit> {
    if (!this.exit) {
      this.child.kill('SIGTERM');
      if (!(await this.waitForExit(graceMs))) this.child.kill('SIGKILL');
    }
    return this.exited;
  }
}

export function describeExit(exit: VmExit): string {
  return exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`;
}
