/** Stable codes for every failure the Firecracker driver reports. */
export type FirecrackerErrorCode =
  /** Firecracker responded to a request with a non-2xx status. */
  | 'firecracker_api_error'
  /** The API socket is missing, refused the connection or dropped it. */
  | 'firecracker_unreachable'
  /** A request, the API socket or the guest agent did not respond in time. */
  | 'firecracker_timeout'
  /** The firecracker or jailer binary could not be started. */
  | 'firecracker_spawn_failed'
  /** The Firecracker process exited while the VM was starting. */
  | 'firecracker_exited'
  /** The hybrid vsock socket responded to CONNECT with something other than an OK line. */
  | 'firecracker_vsock_error'
  /** The VM spec or the driver options cannot work with Firecracker or the jailer. */
  | 'firecracker_invalid_config';

export class FirecrackerError extends Error {
  readonly code: FirecrackerErrorCode;

  constructor(code: FirecrackerErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FirecrackerError';
    this.code = code;
  }
}

/** A non-2xx response from Firecracker's API, with the fault message Firecracker sent. */
export class FirecrackerApiError extends FirecrackerError {
  readonly method: string;
  readonly path: string;
  readonly statusCode: number;
  /** Firecracker's `fault_message`, or the raw body (truncated to 500 characters) when it sent none. */
  readonly faultMessage: string;

  constructor(method: string, path: string, statusCode: number, faultMessage: string) {
    super(
      'firecracker_api_error',
      `Firecracker rejected ${method} ${path} with status ${statusCode}: ${faultMessage}`,
    );
    this.name = 'FirecrackerApiError';
    this.method = method;
    this.path = path;
    this.statusCode = statusCode;
    this.faultMessage = faultMessage;
  }
}
