import { request as httpRequest } from 'node:http';

import type {
  BootSource,
  Drive,
  FirecrackerVersion,
  InstanceActionInfo,
  Logger,
  MachineConfiguration,
  NetworkInterface,
  PartialDrive,
  SnapshotCreateParams,
  SnapshotLoadParams,
  VmState,
  Vsock,
} from './api-types.js';
import { FirecrackerApiError, FirecrackerError } from './errors.js';

export type HttpMethod = 'GET' | 'PUT' | 'PATCH';

/** One API call as it goes on the wire. `body` is JSON text. */
export interface TransportRequest {
  method: HttpMethod;
  path: string;
  body?: string;
  timeoutMs: number;
}

export interface TransportResponse {
  statusCode: number;
  body: string;
}

/**
 * Sends one request to Firecracker. It rejects with a FirecrackerError coded
 * `firecracker_unreachable` or `firecracker_timeout` when no response arrives, and resolves
 * with any response that does arrive, whatever its status.
 */
export type FirecrackerTransport = (request: TransportRequest) => Promise<TransportResponse>;

/** Configuration requests normally complete within milliseconds, so 5 s is ample. */
export const DEFAULT_API_TIMEOUT_MS = 5_000;

/**
 * Snapshot requests copy guest memory to or from disk. An estimate: 15 s covers 1 GiB at
 * 100 MB/s with room to spare.
 */
export const DEFAULT_SNAPSHOT_TIMEOUT_MS = 15_000;

/** Firecracker's responses are a few hundred bytes, so a larger one is not from Firecracker. */
const MAX_RESPONSE_BYTES = 1 << 20;

/** Maximum length of the fault text kept when a response body is not Firecracker's JSON. */
const MAX_RAW_FAULT_CHARS = 500;

/** Connection errors that mean nothing is serving the API socket. */
const UNREACHABLE_CODES = new Set(['ENOENT', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ENOTSOCK']);

/** Returns a transport that sends each request over a fresh connection to `socketPath`. */
export function unixSocketTransport(socketPath: string): FirecrackerTransport {
  return (request) =>
    new Promise((resolve, reject) => {
      const headers: Record<string, string> = { Accept: 'application/json' };
      if (request.body !== undefined) {
        headers['Content-Type'] = 'application/json';
        headers['Content-Length'] = String(Buffer.byteLength(request.body));
      }

      const outgoing = httpRequest({
        socketPath,
        path: request.path,
        method: request.method,
        headers,
        agent: false,
      });

      const timer = setTimeout(() => {
        outgoing.destroy(
          new FirecrackerError(
            'firecracker_timeout',
            `Firecracker did not respond to ${request.method} ${request.path} on ${socketPath} ` +
              `within ${request.timeoutMs} ms.`,
          ),
        );
      }, request.timeoutMs);

      outgoing.on('response', (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) {
            outgoing.destroy(
              new FirecrackerError(
                'firecracker_unreachable',
                `The response to ${request.method} ${request.path} on ${socketPath} exceeded ` +
                  `${MAX_RESPONSE_BYTES} bytes, so the socket is not Firecracker's API.`,
              ),
            );
            return;
          }
          chunks.push(chunk);
        });
        response.on('end', () => {
          clearTimeout(timer);
          resolve({
            statusCode: response.statusCode ?? 0,
            body: Buffer.concat(chunks).toString('utf8'),
          });
        });
        response.on('error', () => {
          // The request's own error handler reports the cause.
        });
      });

      outgoing.on('error', (error: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (error instanceof FirecrackerError) {
          reject(error);
          return;
        }
        const reason = error.code && UNREACHABLE_CODES.has(error.code) ? error.code : error.message;
        reject(
          new FirecrackerError(
            'firecracker_unreachable',
            `Could not reach the Firecracker API at ${socketPath} for ${request.method} ` +
              `${request.path} (${reason}). Check that the firecracker process is running.`,
            { cause: error },
          ),
        );
      });

      outgoing.end(request.body);
    });
}

/** Extracts Firecracker's `fault_message`, or a truncated copy of the raw body. */
function faultMessageOf(body: string): string {
  try {
    const parsed: unknown = JSON.parse(body);
    if (parsed !== null && typeof parsed === 'object' && 'fault_message' in parsed) {
      const message = (parsed as { fault_message: unknown }).fault_message;
      if (typeof message === 'string') return message;
    }
  } catch {
    // Not JSON: report the raw text below.
  }
  const trimmed = body.trim();
  if (trimmed === '') return '(empty response body)';
  return trimmed.length > MAX_RAW_FAULT_CHARS
    ? `${trimmed.slice(0, MAX_RAW_FAULT_CHARS)}…`
    : trimmed;
}

export interface FirecrackerApiClientOptions {
  /** The API socket (`--api-sock`). Ignored when `transport` is given. */
  socketPath?: string;
  /** Replaces the Unix socket transport, e.g. to record requests in tests. */
  transport?: FirecrackerTransport;
  /** Timeout of each request in ms. Default DEFAULT_API_TIMEOUT_MS. */
  timeoutMs?: number;
}

export interface RequestOptions {
  /** Overrides the client's timeout for this request, in ms. */
  timeoutMs?: number;
}

/** A typed client for the Firecracker API endpoints that hearth uses. */
export class FirecrackerApiClient {
  private readonly transport: FirecrackerTransport;
  private readonly timeoutMs: number;

  constructor(options: FirecrackerApiClientOptions) {
    if (options.transport) {
      this.transport = options.transport;
    } else if (options.socketPath) {
      this.transport = unixSocketTransport(options.socketPath);
    } else {
      throw new FirecrackerError(
        'firecracker_invalid_config',
        'FirecrackerApiClient needs a socketPath or a transport.',
      );
    }
    this.timeoutMs = options.timeoutMs ?? DEFAULT_API_TIMEOUT_MS;
  }

  /**
   * Sends one request and parses the JSON response body, if any. A non-2xx status rejects with a
   * FirecrackerApiError carrying Firecracker's fault message.
   */
  async request(
    method: HttpMethod,
    path: string,
    body?: object,
    options: RequestOptions = {},
  ): Promise<unknown> {
    const response = await this.transport({
      method,
      path,
      body: body === undefined ? undefined : JSON.stringify(body),
      timeoutMs: options.timeoutMs ?? this.timeoutMs,
    });
    if (response.statusCode < 200 || response.statusCode > 299) {
      throw new FirecrackerApiError(
        method,
        path,
        response.statusCode,
        faultMessageOf(response.body),
      );
    }
    if (response.body.trim() === '') return undefined;
    try {
      return JSON.parse(response.body);
    } catch (error) {
      throw new FirecrackerError(
        'firecracker_unreachable',
        `Firecracker answered ${method} ${path} with a body that is not JSON.`,
        { cause: error },
      );
    }
  }

  async getVersion(options?: RequestOptions): Promise<FirecrackerVersion> {
    const version = await this.request('GET', '/version', undefined, options);
    if (
      version === null ||
      typeof version !== 'object' ||
      typeof (version as Partial<FirecrackerVersion>).firecracker_version !== 'string'
    ) {
      throw new FirecrackerError(
        'firecracker_unreachable',
        'GET /version returned no firecracker_version, so the socket is not Firecracker.',
      );
    }
    return version as FirecrackerVersion;
  }

  async putMachineConfig(config: MachineConfiguration): Promise<void> {
    await this.request('PUT', '/machine-config', config);
  }

  async putBootSource(source: BootSource): Promise<void> {
    await this.request('PUT', '/boot-source', source);
  }

  async putDrive(drive: Drive): Promise<void> {
    await this.request('PUT', `/drives/${encodeURIComponent(drive.drive_id)}`, drive);
  }

  async patchDrive(drive: PartialDrive): Promise<void> {
    await this.request('PATCH', `/drives/${encodeURIComponent(drive.drive_id)}`, drive);
  }

  async putNetworkInterface(iface: NetworkInterface): Promise<void> {
    await this.request('PUT', `/network-interfaces/${encodeURIComponent(iface.iface_id)}`, iface);
  }

  async putVsock(vsock: Vsock): Promise<void> {
    await this.request('PUT', '/vsock', vsock);
  }

  async putLogger(logger: Logger): Promise<void> {
    await this.request('PUT', '/logger', logger);
  }

  async createSyncAction(
    actionType: InstanceActionInfo['action_type'],
    options?: RequestOptions,
  ): Promise<void> {
    const action: InstanceActionInfo = { action_type: actionType };
    await this.request('PUT', '/actions', action, options);
  }

  async patchVmState(state: VmState['state']): Promise<void> {
    const body: VmState = { state };
    await this.request('PATCH', '/vm', body);
  }

  async createSnapshot(params: SnapshotCreateParams, options?: RequestOptions): Promise<void> {
    await this.request('PUT', '/snapshot/create', params, {
      timeoutMs: options?.timeoutMs ?? DEFAULT_SNAPSHOT_TIMEOUT_MS,
    });
  }

  async loadSnapshot(params: SnapshotLoadParams, options?: RequestOptions): Promise<void> {
    await this.request('PUT', '/snapshot/load', params, {
      timeoutMs: options?.timeoutMs ?? DEFAULT_SNAPSHOT_TIMEOUT_MS,
    });
  }
}
