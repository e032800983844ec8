import { spawn } from 'node:child_process';
import { mkdir, open, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

export interface RunOptions {
  cwd?: string;
  /** Added to the inherited environment. */
  env?: Record<string, string>;
}

/** A command that could not start or exited unsuccessfully. */
export class CommandFailedError extends Error {
  constructor(
    readonly command: string,
    message: string,
  ) {
    super(message);
    this.name = 'CommandFailedError';
  }
}

/**
 * The log file of one step. Opening it truncates it, and every command run through it
 * writes its stdout and stderr there, after a "$ command" header line.
 */
export class StepLog {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
  ) {}

  static async open(path: string): Promise<StepLog> {
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, '');
    // Append mode, so that lines written here and by child processes never overwrite each other.
    return new StepLog(path, await open(path, 'a'));
  }

  async write(text: string): Promise<void> {
    await this.handle.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  /**
   * Runs a command with stdin closed and its output appended to the log. The arguments go
   * to the process as they are, never through a shell. Rejects with CommandFailedError
   * when the command cannot start, exits non-zero or is killed by a signal.
   */
  async run(command: string, args: readonly string[], options: RunOptions = {}): Promise<void> {
    const display = [command, ...args].map(quoteForDisplay).join(' ');
    await this.write(`$ ${display}`);

    const child = spawn(command, args, {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      stdio: ['ignore', this.handle.fd, this.handle.fd],
    });
    const outcome = await new Promise<{ code: number | null; signal: string | null }>(
      (resolve, reject) => {
        child.once('error', reject);
        child.once('close', (code, signal) => resolve({ code, signal }));
      },
    ).catch((error: NodeJS.ErrnoException) => {
      const hint = error.code === 'ENOENT' ? ` (is ${command} installed? ./setup.sh installs it)` : '';
      throw new CommandFailedError(display, `Failed to start ${command}${hint}: ${error.message}`);
    });

    if (outcome.code !== 0) {
      const outcomeText =
        outcome.signal === null ? `exited with code ${outcome.code}` : `was killed by ${outcome.signal}`;
      await this.write(`(${outcomeText})`);
      throw new CommandFailedError(display, `"${display}" ${outcomeText}.`);
    }
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

/** Opens the log at `path`, passes it to `use` and closes it once `use` resolves or rejects. */
export async function withStepLog<T>(path: string, use: (log: StepLog) => Promise<T>): Promise<T> {
  const log = await StepLog.open(path);
  try {
    return await use(log);
  } finally {
    await log.close();
  }
}

function quoteForDisplay(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}
