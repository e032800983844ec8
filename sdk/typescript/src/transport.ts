// HTTP plumbing shared by every API call: the base URL and key, deadlines and abort
// signals, and turning failed responses into HearthError subclasses.
import {
  AbortError,
  ConnectionError,
  HearthError,
  InvalidRequestError,
  TimeoutError,
  createError,
} from './errors.js';

export interface TransportOptions {
  baseUrl: string;
  apiKey: string | undefined;
  /** Default limit for one request; 0 means none. */
  timeoutMs: number;
  fetch: typeof fetch;
}

/** Options that every public call accepts besides its own. */
export interface CallOptions {
  /** Aborts the call; it then rejects with AbortError. */
  signal?: AbortSignal;
  /**
   * Limit in milliseconds for this HTTP request, overriding the client's `timeoutMs`;
   * 0 means none. When it passes, the call rejects with TimeoutError.
   */
  requestTimeoutMs?: number;
}

export interface RequestSpec extends CallOptions {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** The path below the base URL, starting with /v1/. */
  path: string;
  query?: Record<string, string>;
  json?: unknown;
  /** A raw body, sent as application/octet-stream. */
  body?: Uint8Array | Blob | ReadableStream<Uint8Array>;
  accept?: string;
}

// Error bodies are one short JSON object; anything longer is not hearthd's.
const MAX_ERROR_BODY_CHARS = 64 * 1024;

export class Transport {
  private readonly baseUrl: URL;

  constructor(private readonly options: TransportOptions) {
    this.baseUrl = parseBaseUrl(options.baseUrl);
  }

  /**
   * Sends one request and passes the successful response to `consume`, under one deadline
   * that covers both. A 4xx or 5xx response becomes the HearthError subclass for its code.
   */
  async call<T>(spec: RequestSpec, consume: (response: Response) => Promise<T>): Promise<T> {
    const deadline = this.deadline(spec);
    try {
      return await consume(await this.send(spec, deadline));
    } catch (error) {
      throw deadline.explain(error);
    } finally {
      deadline.release();
    }
  }

  /**
   * Sends one request and returns the response body as a stream. The time limit covers only
   * the wait for the response headers. The caller's signal can abort the body until it
   * ends, and errors while reading it are HearthErrors too.
   */
  async stream(spec: RequestSpec): Promise<ReadableStream<Uint8Array>> {
    const deadline = this.deadline(spec);
    let response: Response;
    try {
      response = await this.send(spec, deadline);
    } catch (error) {
      deadline.release();
      throw deadline.explain(error);
    }
    deadline.stopTimer();
    if (!response.body) {
      deadline.release();
      return new ReadableStream({ start: (controller) => controller.close() });
    }

    const reader = response.body.getReader();
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const { done, value } = await reader.read();
          if (done) {
            deadline.release();
            controller.close();
          } else {
            controller.enqueue(value);
          }
        } catch (error) {
          deadline.release();
          controller.error(deadline.explain(error));
        }
      },
      async cancel(reason) {
        deadline.release();
        await reader.cancel(reason);
      },
    });
  }

  private deadline(spec: RequestSpec): Deadline {
    const timeoutMs = spec.requestTimeoutMs ?? this.options.timeoutMs;
    return new Deadline(spec.signal, timeoutMs, this.baseUrl.href);
  }

  private async send(spec: RequestSpec, deadline: Deadline): Promise<Response> {
    const response = await this.options.fetch(this.url(spec), this.init(spec, deadline));
    if (!response.ok) throw await errorFromResponse(response);
    return response;
  }

  private url(spec: RequestSpec): URL {
    const url = new URL(spec.path.slice(1), this.baseUrl);
    for (const [name, value] of Object.entries(spec.query ?? {})) {
      url.searchParams.set(name, value);
    }
    return url;
  }

  private init(spec: RequestSpec, deadline: Deadline): RequestInit {
    const headers: Record<string, string> = { accept: spec.accept ?? 'application/json' };
    if (this.options.apiKey) headers.authorization = `Bearer ${this.options.apiKey}`;
    const init: RequestInit & { duplex?: 'half' } = {
      method: spec.method,
      headers,
      signal: deadline.signal,
    };
    if (spec.json !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(spec.json);
    } else if (spec.body !== undefined) {
      headers['content-type'] = 'application/octet-stream';
      init.body = spec.body;
      // Node's fetch sends a stream body only with duplex 'half', which lets the response
      // start before the body ends.
      if (spec.body instanceof ReadableStream) init.duplex = 'half';
    }
    return init;
  }
}

/** Reads a JSON response body; a body that is not JSON fails with `invalid_response`. */
export async function readJson<T>(response: Response): Promise<T> {
  const text = await response.text();
  try {
    return JSON.parse(text) as T;
  } catch (error) {
    throw new HearthError(
      'invalid_response',
      `hearthd sent a body that is not JSON: ${text.slice(0, 200)}`,
      response.status,
      { cause: error },
    );
  }
}

function parseBaseUrl(baseUrl: string): URL {
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch {
    throw new InvalidRequestError('invalid_config', `The base URL ${baseUrl} is not a valid URL.`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InvalidRequestError(
      'invalid_config',
      `The base URL ${baseUrl} is not http or https. The TypeScript SDK speaks HTTP over TCP: ` +
        'run hearthd with HEARTH_LISTEN=127.0.0.1:PORT, or pass a fetch that reaches its socket.',
    );
  }
  // A base URL with a path prefix must end with / so that relative paths stay below it.
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  return url;
}

async function errorFromResponse(response: Response): Promise<HearthError> {
  const text = (await response.text()).slice(0, MAX_ERROR_BODY_CHARS);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = null;
  }
  const error = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  if (typeof error?.code === 'string') {
    return createError(error.code, String(error.message ?? ''), response.status);
  }
  return createError(
    'invalid_response',
    `hearthd returned HTTP ${response.status} without an error body: ${text.slice(0, 200)}`,
    response.status,
  );
}

/**
 * One request's abort signal. It fires when the caller's signal fires or the time limit
 * passes, and records which of the two fired so that the error names the cause.
 */
class Deadline {
  private readonly controller = new AbortController();
  private readonly timer: ReturnType<typeof setTimeout> | undefined;
  private timedOut = false;
  private readonly onCallerAbort = () => this.controller.abort(this.caller?.reason);

  constructor(
    private readonly caller: AbortSignal | undefined,
    private readonly timeoutMs: number,
    /** hearthd's base URL, for error messages. */
    private readonly target: string,
  ) {
    if (caller?.aborted) {
      this.controller.abort(caller.reason);
    } else {
      caller?.addEventListener('abort', this.onCallerAbort, { once: true });
    }
    if (timeoutMs > 0) {
      this.timer = setTimeout(() => {
        this.timedOut = true;
        this.controller.abort();
      }, timeoutMs);
    }
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /**
   * Turns an abort, a timeout or a network failure into its HearthError. Other errors,
   * such as one thrown by an onStdout callback, pass through unchanged.
   */
  explain(error: unknown): unknown {
    if (this.caller?.aborted) {
      return new AbortError('aborted', 'The call was aborted by its AbortSignal.', undefined, {
        cause: this.caller.reason,
      });
    }
    if (this.timedOut) {
      return new TimeoutError(
        'request_timeout',
        `The request did not finish within ${this.timeoutMs} ms; ` +
          'raise requestTimeoutMs or the client timeoutMs.',
        undefined,
        { cause: error },
      );
    }
    if (error instanceof HearthError) return error;
    return connectionError(error, this.target) ?? error;
  }

  stopTimer(): void {
    clearTimeout(this.timer);
  }

  /** Stops the timer and unlinks the caller's signal. */
  release(): void {
    this.stopTimer();
    this.caller?.removeEventListener('abort', this.onCallerAbort);
  }
}

// Socket errors after the connection was made, as opposed to failures to connect at all.
const BROKEN_CONNECTION_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET']);

/**
 * Returns the ConnectionError for a network failure, or null for any other error. Node's
 * fetch (undici) reports a failed request as TypeError "fetch failed" and a body cut off
 * midway as TypeError "terminated", each with the socket error as its cause.
 */
function connectionError(error: unknown, target: string): ConnectionError | null {
  if (!(error instanceof TypeError)) return null;
  if (error.message !== 'fetch failed' && error.message !== 'terminated') return null;
  const cause = error.cause as { code?: string; message?: string } | undefined;
  const detail = cause?.code ?? cause?.message ?? error.message;
  const options = { cause: error };
  const broken = error.message === 'terminated' || BROKEN_CONNECTION_CODES.has(cause?.code ?? '');
  if (broken) {
    const message = `The connection to hearthd at ${target} broke midway: ${detail}.`;
    return new ConnectionError('connection_lost', message, undefined, options);
  }
  const message = `Could not reach hearthd at ${target}: ${detail}. Check that it runs there.`;
  return new ConnectionError('server_unreachable', message, undefined, options);
}
