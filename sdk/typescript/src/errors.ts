/**
 * The root of every error this SDK throws. `code` is stable and machine-readable: it is the
 * API's error code (e.g. `session_not_found`) or one of the SDK's own (`aborted`,
 * `request_timeout`, `server_unreachable`, `connection_lost`, `invalid_path`,
 * `invalid_config`, `invalid_response`). Match on `code`; the subclasses group codes by
 * what a caller does about them.
 */
export class HearthError extends Error {
  override name = 'HearthError';

  constructor(
    readonly code: string,
    message: string,
    /** The HTTP status of the response; undefined for errors raised before or without one. */
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The API key is missing or not valid (`unauthorized`). */
export class AuthenticationError extends HearthError {
  override name = 'AuthenticationError';
}

/**
 * The session, file or route does not exist. A session that another API key created is
 * reported as not found too.
 */
export class NotFoundError extends HearthError {
  override name = 'NotFoundError';
}

/** The request was rejected as invalid: a bad option, a path that escapes, a missing cwd. */
export class InvalidRequestError extends HearthError {
  override name = 'InvalidRequestError';
}

/** The session was closed, reached its lifetime, or lost its VM; create a new one. */
export class SessionClosedError extends HearthError {
  override name = 'SessionClosedError';
}

/** The session is still booting or has too many calls waiting; retry later. */
export class SessionBusyError extends HearthError {
  override name = 'SessionBusyError';
}

/**
 * A request body or file does not fit: it is over the server's upload limit, or the
 * session's disk quota is used up (`disk_full`).
 */
export class PayloadTooLargeError extends HearthError {
  override name = 'PayloadTooLargeError';
}

/**
 * hearthd cannot serve the call now: no capacity, no images, a VM that failed or stopped,
 * or a guest agent that returned an error.
 */
export class ServiceUnavailableError extends HearthError {
  override name = 'ServiceUnavailableError';
}

/**
 * The call ran past its time limit: the SDK's request timeout (`request_timeout`), or a
 * server-side limit. An execution that times out inside the guest is not an error: its
 * result has `status: 'timeout'`.
 */
export class TimeoutError extends HearthError {
  override name = 'TimeoutError';
}

/** The caller's AbortSignal fired. `cause` is the signal's reason. */
export class AbortError extends HearthError {
  override name = 'AbortError';
}

/** hearthd could not be reached, or the connection broke before the response ended. */
export class ConnectionError extends HearthError {
  override name = 'ConnectionError';
}

type ErrorClass = new (
  code: string,
  message: string,
  status?: number,
  options?: { cause?: unknown },
) => HearthError;

/** Maps every error code the API and the SDK use to the class thrown for it. */
const CLASS_BY_CODE: Record<string, ErrorClass> = {
  unauthorized: AuthenticationError,

  not_found: NotFoundError,
  session_not_found: NotFoundError,
  file_not_found: NotFoundError,

  invalid_request: InvalidRequestError,
  invalid_path: InvalidRequestError,
  invalid_config: InvalidRequestError,
  cwd_not_found: InvalidRequestError,
  not_a_file: InvalidRequestError,
  not_a_directory: InvalidRequestError,
  invalid_egress_policy: InvalidRequestError,
  lifetime_too_long: InvalidRequestError,
  egress_not_supported: InvalidRequestError,
  method_not_allowed: InvalidRequestError,
  unsupported_media_type: InvalidRequestError,

  session_closed: SessionClosedError,
  session_expired: SessionClosedError,
  session_lost: SessionClosedError,

  session_busy: SessionBusyError,

  payload_too_large: PayloadTooLargeError,
  file_too_large: PayloadTooLargeError,
  disk_full: PayloadTooLargeError,

  capacity_exceeded: ServiceUnavailableError,
  images_missing: ServiceUnavailableError,
  vm_unavailable: ServiceUnavailableError,
  vm_boot_failed: ServiceUnavailableError,
  server_shutting_down: ServiceUnavailableError,
  agent_error: ServiceUnavailableError,
  file_error: ServiceUnavailableError,

  request_timeout: TimeoutError,
  execution_timeout: TimeoutError,

  aborted: AbortError,

  server_unreachable: ConnectionError,
  connection_lost: ConnectionError,
};

/** The class for a code this SDK does not know yet, chosen by the HTTP status. */
const CLASS_BY_STATUS: Record<number, ErrorClass> = {
  400: InvalidRequestError,
  401: AuthenticationError,
  404: NotFoundError,
  410: SessionClosedError,
  413: PayloadTooLargeError,
  502: ServiceUnavailableError,
  503: ServiceUnavailableError,
  507: PayloadTooLargeError,
  504: TimeoutError,
};

/** Builds the error for a code, as the subclass that CLASS_BY_CODE names for it. */
export function createError(
  code: string,
  message: string,
  status?: number,
  options?: { cause?: unknown },
): HearthError {
  const ErrorType =
    CLASS_BY_CODE[code] ?? (status === undefined ? undefined : CLASS_BY_STATUS[status]);
  return new (ErrorType ?? HearthError)(code, message, status, options);
}
