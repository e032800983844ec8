// @hearth/sdk: a client for hearthd's REST API, with no runtime dependencies.
import { InvalidRequestError } from './errors.js';
import { Sessions } from './sessions.js';
import { Transport } from './transport.js';

export * from './errors.js';
export type { ExecuteOptions, ExecutionError, ExecutionResult } from './execute.js';
export type {
  DownloadOptions,
  FileData,
  FileEntry,
  FileInfo,
  FileListing,
  ReadOptions,
} from './files.js';
export { Files } from './files.js';
export type { EgressPolicy, SessionInfo, SessionOptions } from './sessions.js';
export { Session, Sessions } from './sessions.js';
export type { CallOptions } from './transport.js';
export type * from './wire.js';

export interface HearthOptions {
  /** The API key, sent as a Bearer token. Default: the HEARTH_API_KEY environment variable. */
  apiKey?: string;
  /**
   * hearthd's address, e.g. `http://127.0.0.1:8700`. Default: the HEARTH_URL environment
   * variable; without either, the constructor throws `invalid_config`.
   */
  baseUrl?: string;
  /**
   * Limit in milliseconds for each request; 0 means none. Default 60000. Session creation
   * and execute calls get longer defaults of their own (see `Sessions.create` and
   * `ExecuteOptions.timeoutMs`), and every call takes `requestTimeoutMs` to override it.
   */
  timeoutMs?: number;
  /**
   * The fetch to send requests with. Default: the global fetch. A fetch that uses an undici
   * dispatcher with `socketPath` reaches a hearthd on a Unix socket.
   */
  fetch?: typeof fetch;
}

// Long enough for a large upload over a local network; a stuck server still fails in time.
const DEFAULT_TIMEOUT_MS = 60_000;

/** The entry point: `new Hearth().sessions.create()` starts a sandbox. */
export class Hearth {
  readonly sessions: Sessions;

  constructor(options: HearthOptions = {}) {
    const environment = globalThis.process?.env ?? {};
    const baseUrl = options.baseUrl ?? environment.HEARTH_URL;
    if (!baseUrl) {
      throw new InvalidRequestError(
        'invalid_config',
        "No hearthd address: pass baseUrl (e.g. 'http://127.0.0.1:8700') or set HEARTH_URL.",
      );
    }
    const transport = new Transport({
      baseUrl,
      apiKey: options.apiKey ?? environment.HEARTH_API_KEY,
      timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      fetch: options.fetch ?? globalThis.fetch.bind(globalThis),
    });
    this.sessions = new Sessions(transport);
  }
}
