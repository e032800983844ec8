import { randomBytes } from 'node:crypto';
import type { Duplex, Readable } from 'node:stream';
import { HearthError } from '../errors.js';
import type { GuestNetworkSettings } from '../network/types.js';
import {
  downloadFile,
  listFiles,
  uploadFile,
  type FileListing,
  type FrameChannel,
} from './files.js';
import { FrameDecoder, FrameType, encodeFrame, encodeJsonFrame, type Frame } from './protocol.js';

export interface AgentReady {
  uptime_seconds: number;
  kernel_release: string;
  cpu_count: number;
}

export interface ExecRequest {
  code: string;
  language: 'python' | 'bash';
  timeout_seconds: number | null;
  env: Record<string, string>;
  cwd: string | null;
  /** Bytes of each stream the guest forwards; it still counts the rest. */
  output_limit_bytes: number;
}

export interface PythonError {
  name: string;
  value: string;
  traceback: string;
}

/** The result frame as the agent sends it; stdout and stderr travel in their own frames. */
export interface AgentResult {
  status: 'ok' | 'error' | 'timeout';
  exit_code: number;
  error: PythonError | null;
  execution_time: number;
  stdout_bytes: number;
  stderr_bytes: number;
  truncated: boolean;
  kernel_restarted: boolean;
  signal?: number;
}

export interface ExecOutcome {
  result: AgentResult;
  stdout: Buffer;
  stderr: Buffer;
}

export interface ExecHandlers {
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
}

interface PendingCall {
  onFrame: (frame: Frame) => void;
  reject: (error: Error) => void;
}

/**
 * Multiplexes calls over one agent channel. Each call gets its own id, and frames that
 * come back are routed by that id, so pings can cross a long execution.
 */
export class AgentClient implements FrameChannel {
  private readonly decoder = new FrameDecoder();
  private readonly pending = new Map<number, PendingCall>();
  private nextCallId = 1;
  private closedError: Error | null = null;

  constructor(private readonly channel: Duplex) {
    channel.on('data', (chunk: Buffer) => this.receive(chunk));
    channel.on('error', (error) => this.fail(error));
    channel.on('close', () => this.fail(new Error('the agent channel closed')));
  }

  /**
   * Greets the agent with the host's clock, the session's env and fresh entropy. A VM that
   * was started before its session (warm pool, snapshot) is greeted again when claimed.
   * With `network`, the guest first reconfigures eth0 from it (MAC, address, route,
   * resolver, package-manager files). If that fails, the call rejects with
   * network_setup_failed.
   */
  async hello(env: Record<string, string>, network?: GuestNetworkSettings): Promise<AgentReady> {
    const frame = await this.request(FrameType.hello, {
      wall_clock_ns: Date.now() * 1_000_000,
      env,
      entropy: randomBytes(64).toString('base64'),
      ...(network ? { network: networkRequest(network) } : {}),
    });
    return JSON.parse(frame.payload.toString()) as AgentReady;
  }

  /** Sends a payload through the guest and back, for measuring the channel itself. */
  async ping(payload: Buffer = Buffer.alloc(0)): Promise<void> {
    const callId = this.allocateCallId();
    await new Promise<void>((resolve, reject) => {
      this.pending.set(callId, {
        onFrame: () => {
          this.pending.delete(callId);
          resolve();
        },
        reject,
      });
      this.write(encodeFrame(FrameType.ping, callId, payload));
    });
  }

  /**
   * Runs one call. When `signal` aborts, the guest is asked to stop the call, which then
   * ends like a timed-out one; the promise still settles with its result.
   */
  async execute(
    request: ExecRequest,
    handlers: ExecHandlers = {},
    signal?: AbortSignal,
  ): Promise<ExecOutcome> {
    const callId = this.allocateCallId();
    const cancel = () => {
      if (this.pending.has(callId)) this.write(encodeFrame(FrameType.cancel, callId));
    };
    signal?.addEventListener('abort', cancel, { once: true });
    const stdout = new OutputBuffer(request.output_limit_bytes);
    const stderr = new OutputBuffer(request.output_limit_bytes);
    return new Promise<ExecOutcome>((resolve, reject) => {
      this.pending.set(callId, {
        onFrame: (frame) => {
          if (frame.type === FrameType.stdout) {
            const kept = stdout.append(frame.payload);
            if (kept) handlers.onStdout?.(kept);
          } else if (frame.type === FrameType.stderr) {
            const kept = stderr.append(frame.payload);
            if (kept) handlers.onStderr?.(kept);
          } else if (frame.type === FrameType.result) {
            this.pending.delete(callId);
            signal?.removeEventListener('abort', cancel);
            const result = JSON.parse(frame.payload.toString()) as AgentResult;
            resolve({ result, stdout: stdout.contents(), stderr: stderr.contents() });
          } else if (frame.type === FrameType.error) {
            this.pending.delete(callId);
            signal?.removeEventListener('abort', cancel);
            reject(agentError(frame));
          }
        },
        reject,
      });
      this.write(encodeJsonFrame(FrameType.exec, callId, request));
      if (signal?.aborted) cancel();
    });
  }

  /** Asks the guest to power off. The VM process exits soon after; nothing is awaited. */
  shutdown(): void {
    if (!this.closedError) this.write(encodeFrame(FrameType.shutdown, 0));
  }

  private async request(type: number, body: unknown): Promise<Frame> {
    const callId = this.allocateCallId();
    return new Promise<Frame>((resolve, reject) => {
      this.pending.set(callId, {
        onFrame: (frame) => {
          this.pending.delete(callId);
          if (frame.type === FrameType.error) reject(agentError(frame));
          else resolve(frame);
        },
        reject,
      });
      this.write(encodeJsonFrame(type, callId, body));
    });
  }

  writeFile(
    path: string,
    source: AsyncIterable<Buffer | Uint8Array>,
    limitBytes: number,
  ): Promise<number> {
    return uploadFile(this, path, source, limitBytes);
  }

  readFile(path: string): Promise<{ size: number; stream: Readable }> {
    return downloadFile(this, path);
  }

  listFiles(path: string): Promise<FileListing> {
    return listFiles(this, path);
  }

  register(callId: number, onFrame: (frame: Frame) => void, reject: (error: Error) => void) {
    if (this.closedError) {
      reject(this.closedError);
      return;
    }
    this.pending.set(callId, { onFrame, reject });
  }

  unregister(callId: number): void {
    this.pending.delete(callId);
  }

  async writeFrame(frame: Buffer): Promise<void> {
    if (this.closedError) throw this.closedError;
    if (this.channel.write(frame)) return;
    await new Promise<void>((resolve) => {
      const settle = () => {
        this.channel.off('drain', settle);
        this.channel.off('close', settle);
        resolve();
      };
      this.channel.on('drain', settle);
      this.channel.on('close', settle);
    });
  }

  allocateCallId(): number {
    if (this.closedError) throw this.closedError;
    const callId = this.nextCallId;
    this.nextCallId = this.nextCallId >= 0xffffffff ? 1 : this.nextCallId + 1;
    return callId;
  }

  private write(data: Buffer): void {
    this.channel.write(data);
  }

  private receive(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (error) {
      this.fail(error as Error);
      this.channel.destroy();
      return;
    }
    for (const frame of frames) this.pending.get(frame.callId)?.onFrame(frame);
  }

  private fail(error: Error): void {
    if (this.closedError) return;
    this.closedError = new HearthError(
      'vm_unavailable',
      `The VM stopped answering: ${error.message}`,
    );
    for (const call of this.pending.values()) call.reject(this.closedError);
    this.pending.clear();
  }
}

/** Collects a stream's bytes up to a limit, so the server's memory stays bounded. */
class OutputBuffer {
  private readonly chunks: Buffer[] = [];
  private size = 0;

  constructor(private readonly limitBytes: number) {}

  /** Keeps what fits under the limit and returns a copy of it, or null when nothing fit. */
  append(chunk: Buffer): Buffer | null {
    const room = this.limitBytes - this.size;
    if (room <= 0) return null;
    const kept = Buffer.from(chunk.length > room ? chunk.subarray(0, room) : chunk);
    this.chunks.push(kept);
    this.size += kept.length;
    return kept;
  }

  contents(): Buffer {
    return Buffer.concat(this.chunks, this.size);
  }
}

/** Builds the greeting's network field, in the agent protocol's snake_case. */
function networkRequest(network: GuestNetworkSettings) {
  const files = network.packageFiles;
  return {
    address: network.address,
    prefix: network.prefix,
    gateway: network.gateway,
    mac_address: network.macAddress,
    files: {
      ...(files.pip !== undefined ? { pip_conf: files.pip } : {}),
      ...(files.npm !== undefined ? { npmrc: files.npm } : {}),
      ...(files.apt !== undefined ? { apt_conf: files.apt } : {}),
    },
  };
}

function agentError(frame: Frame): HearthError {
  const body = JSON.parse(frame.payload.toString()) as { code: string; message: string };
  return new HearthError(body.code, body.message);
}
