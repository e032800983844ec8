import { ConnectionError, createError, HearthError, InvalidRequestError } from './errors.js';
import { readJson, type CallOptions, type Transport } from './transport.js';
import type { ExecuteEventJson, ExecuteRequestJson, ExecuteResultJson } from './wire.js';

export interface ExecuteOptions extends CallOptions {
  /** The interpreter. Default `'python'`, which keeps variables between calls. */
  language?: 'python' | 'bash';
  /**
   * Time limit in milliseconds for the code inside the guest; the server's default is
   * 60000 and its maximum 3600000. When it passes, the guest stops the code and the result
   * has `status: 'timeout'` (this is not an error).
   */
  timeoutMs?: number;
  /** Environment variables for this call only, added to the session's. */
  env?: Record<string, string>;
  /** Absolute working directory in the guest; a missing one fails with `cwd_not_found`. */
  cwd?: string;
  /** Bytes kept per stream before the output is truncated. Server default 4 MiB. */
  outputLimitBytes?: number;
  /** Also return the exact output bytes as `stdoutRaw` and `stderrRaw`. Default false. */
  rawOutput?: boolean;
  /**
   * Called with each piece of stdout as the code prints it. Giving this or `onStderr`
   * streams the response; the pieces joined equal the result's `stdout`.
   */
  onStdout?: (data: string) => void;
  onStderr?: (data: string) => void;
}

export interface ExecutionError {
  /** The exception class, e.g. `ValueError`, or hearth's `MemoryLimitExceeded`. */
  name: string;
  value: string;
  traceback: string;
}

export interface ExecutionResult {
  /** `ok`; `error` for a non-zero exit or an exception; `timeout` after the time limit. */
  status: 'ok' | 'error' | 'timeout';
  /** Decoded as UTF-8, with U+FFFD in place of invalid bytes. */
  stdout: string;
  stderr: string;
  /** 1 for a Python exception, 124 after a timeout. */
  exitCode: number;
  /** The signal that ended a Bash call (e.g. 9); null otherwise. */
  signal: number | null;
  /** The Python exception; null for Bash and for code that raised nothing. */
  error: ExecutionError | null;
  /** Seconds, measured inside the guest. */
  executionTimeSeconds: number;
  /** Whether a stream went over `outputLimitBytes` and was cut. */
  truncated: boolean;
  /** Bytes the code wrote to stdout, including any that were cut. */
  stdoutTotalBytes: number;
  stderrTotalBytes: number;
  /** The Python interpreter was restarted during the call, so its variables are gone. */
  kernelRestarted: boolean;
  /** The exact bytes, present when the call set `rawOutput`. */
  stdoutRaw?: Uint8Array;
  stderrRaw?: Uint8Array;
  /** Milliseconds spent waiting behind earlier calls on the same session. */
  queuedMs: number;
  /** Milliseconds from hearthd sending the code to the guest to getting the result. */
  roundTripMs: number;
}

// The server keeps a timed-out call for up to 2 s more while it interrupts Python, and the
// call may wait behind others, so the HTTP request gets this much beyond the code's limit.
const EXECUTE_REQUEST_GRACE_MS = 30_000;
// The limit hearthd applies when a call gives none.
const SERVER_DEFAULT_EXECUTE_TIMEOUT_MS = 60_000;

/** Runs code in a session, buffered or streamed as NDJSON when a callback is given. */
export async function execute(
  transport: Transport,
  sessionId: string,
  code: string,
  options: ExecuteOptions,
): Promise<ExecutionResult> {
  const streaming = options.onStdout !== undefined || options.onStderr !== undefined;
  const spec = {
    method: 'POST' as const,
    path: `/v1/sessions/${encodeURIComponent(sessionId)}/execute`,
    json: requestJson(code, options),
    accept: streaming ? 'application/x-ndjson' : 'application/json',
    signal: options.signal,
    requestTimeoutMs:
      options.requestTimeoutMs ??
      (options.timeoutMs ?? SERVER_DEFAULT_EXECUTE_TIMEOUT_MS) + EXECUTE_REQUEST_GRACE_MS,
  };
  const json = await transport.call(spec, (response) =>
    streaming ? readEvents(response, options) : readJson<ExecuteResultJson>(response),
  );
  return resultFromJson(json);
}

function requestJson(code: string, options: ExecuteOptions): ExecuteRequestJson {
  const json: ExecuteRequestJson = { code };
  if (options.language !== undefined) json.language = options.language;
  if (options.timeoutMs !== undefined) {
    if (!(options.timeoutMs > 0)) {
      throw new InvalidRequestError(
        'invalid_request',
        `timeoutMs must be a positive number of milliseconds, not ${options.timeoutMs}.`,
      );
    }
    json.timeout_seconds = options.timeoutMs / 1000;
  }
  if (options.env !== undefined) json.env = options.env;
  if (options.cwd !== undefined) json.cwd = options.cwd;
  if (options.outputLimitBytes !== undefined) json.output_limit_bytes = options.outputLimitBytes;
  if (options.rawOutput !== undefined) json.raw_output = options.rawOutput;
  return json;
}

/** Reads NDJSON events, hands output to the callbacks, and returns the final result. */
async function readEvents(response: Response, options: ExecuteOptions): Promise<ExecuteResultJson> {
  if (!response.body) throw streamEnded();
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = '';

  const handle = (line: string): ExecuteResultJson | null => {
    if (!line.trim()) return null;
    const event = parseEvent(line);
    switch (event.type) {
      case 'stdout':
        options.onStdout?.(event.data);
        return null;
      case 'stderr':
        options.onStderr?.(event.data);
        return null;
      case 'result':
        return event.result;
      case 'error':
        throw createError(event.error.code, event.error.message);
    }
  };

  try {
    for (;;) {
      const { done, value } = await reader.read();
      pending += decoder.decode(value, { stream: !done });
      const lines = pending.split('\n');
      pending = done ? '' : lines.pop()!;
      for (const line of lines) {
        const result = handle(line);
        if (result) return result;
      }
      if (done) throw streamEnded();
    }
  } finally {
    // Frees the connection whether the stream ended, a callback threw or the result came.
    await reader.cancel().catch(() => undefined);
  }
}

function parseEvent(line: string): ExecuteEventJson {
  try {
    return JSON.parse(line) as ExecuteEventJson;
  } catch (error) {
    throw new HearthError(
      'invalid_response',
      `hearthd sent an execute stream line that is not JSON: ${line.slice(0, 200)}`,
      undefined,
      { cause: error },
    );
  }
}

function streamEnded(): ConnectionError {
  return new ConnectionError(
    'connection_lost',
    'The execute stream ended before its result arrived.',
  );
}

function resultFromJson(json: ExecuteResultJson): ExecutionResult {
  const result: ExecutionResult = {
    status: json.status,
    stdout: json.stdout,
    stderr: json.stderr,
    exitCode: json.exit_code,
    signal: json.signal ?? null,
    error: json.error,
    executionTimeSeconds: json.execution_time,
    truncated: json.truncated,
    stdoutTotalBytes: json.stdout_bytes,
    stderrTotalBytes: json.stderr_bytes,
    kernelRestarted: json.kernel_restarted,
    queuedMs: json.timing.queued_ms,
    roundTripMs: json.timing.round_trip_ms,
  };
  if (json.stdout_base64 !== undefined) result.stdoutRaw = fromBase64(json.stdout_base64);
  if (json.stderr_base64 !== undefined) result.stderrRaw = fromBase64(json.stderr_base64);
  return result;
}

function fromBase64(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let index = 0; index < binary.length; index += 1) bytes[index] = binary.charCodeAt(index);
  return bytes;
}
