import { connect, type Socket } from 'node:net';
import { HearthError } from '../errors.js';

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
}

// QMP replies within milliseconds, so a command that takes longer means QEMU is stuck.
const COMMAND_TIMEOUT_MS = 10_000;

/** A minimal client for QEMU's machine protocol (QMP) on a Unix socket. */
export class QmpClient {
  private buffer = '';
  private readonly queue: Pending[] = [];

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => this.receive(text));
    socket.on('close', () => this.failAll(new Error('QMP connection closed')));
    socket.on('error', (error) => this.failAll(error));
  }

  /** Connects, reads the greeting and leaves capabilities negotiation mode. */
  static async connect(path: string, timeoutMs = COMMAND_TIMEOUT_MS): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const candidate = connect(path);
          candidate.once('connect', () => resolve(candidate));
          candidate.once('error', reject);
        });
        const client = new QmpClient(socket);
        // The greeting arrives as the first line and is read like a command's reply.
        await client.waitForLine();
        await client.execute('qmp_capabilities');
        return client;
      } catch (error) {
        if (Date.now() > deadline) {
          throw new HearthError(
            'vm_unavailable',
            `Could not open QEMU's QMP socket ${path}: ${(error as Error).message}`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }
  }

  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const body = JSON.stringify(
      args ? { execute: command, arguments: args } : { execute: command },
    );
    const answer = this.waitForLine();
    this.socket.write(body + '\n');
    return answer;
  }

  close(): void {
    this.socket.destroy();
  }

  private waitForLine(): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(new HearthError('vm_unavailable', 'QEMU did not reply to a QMP command in time.')),
        COMMAND_TIMEOUT_MS,
      );
      this.queue.push({
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
    });
  }

  private receive(text: string): void {
    this.buffer += text;
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (!line) continue;
      const message = JSON.parse(line) as {
        QMP?: unknown;
        return?: unknown;
        error?: { class: string; desc: string };
        event?: string;
      };
      if (message.event) continue;
      const pending = this.queue.shift();
      if (!pending) continue;
      if (message.error) {
        pending.reject(
          new HearthError('vm_unavailable', `QEMU rejected a command: ${message.error.desc}`),
        );
      } else {
        pending.resolve(message.return ?? message.QMP);
      }
    }
  }

  private failAll(error: Error): void {
    for (const pending of this.queue.splice(0)) pending.reject(error);
  }
}

/** Polls a QMP query every `intervalMs` until `done` accepts its reply, or fails after the timeout. */
export async function pollQmp<T>(
  client: QmpClient,
  command: string,
  done: (answer: T) => boolean,
  timeoutMs: number,
  intervalMs = 5,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const answer = (await client.execute(command)) as T;
    if (done(answer)) return answer;
    if (Date.now() > deadline) {
      throw new HearthError(
        'vm_unavailable',
        `QEMU's ${command} did not settle in ${timeoutMs} ms.`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
