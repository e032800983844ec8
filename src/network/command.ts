import { spawn } from 'node:child_process';

/** A host tool (ip, nft) that exited non-zero; the message quotes its stderr. */
export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(`${command} failed with exit code ${exitCode}: ${stderr.trim() || '(no output)'}`);
    this.name = 'CommandError';
  }
}

// ip and nft finish in milliseconds; a minute means the host is stuck, not busy.
const COMMAND_TIMEOUT_MS = 60_000;

/** Runs a command without a shell, feeds it `input` on stdin, and returns its stdout. */
export function runCommand(command: string, args: readonly string[], input = ''): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: COMMAND_TIMEOUT_MS,
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.once('error', reject);
    child.once('close', (code) => {
      const name = [command, ...args.slice(0, 3)].join(' ');
      if (code === 0) resolve(Buffer.concat(stdout).toString('utf8'));
      else reject(new CommandError(name, code, Buffer.concat(stderr).toString('utf8')));
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}
