/**
 * An error with a stable, machine-readable code. The API sends it as
 * {"error": {"code", "message"}} and the CLI prints the code with the message.
 */
export class HearthError extends Error {
  constructor(
    readonly code: string,
    message: string,
    /** The HTTP status the API answers with. */
    readonly status: number = statusForCode(code),
  ) {
    super(message);
    this.name = 'HearthError';
  }
}

const STATUS_BY_CODE: Record<string, number> = {
  invalid_request: 400,
  invalid_path: 400,
  cwd_not_found: 400,
  not_a_file: 400,
  not_a_directory: 400,
  lifetime_too_long: 400,
  egress_not_supported: 400,
  unauthorized: 401,
  session_not_found: 404,
  file_not_found: 404,
  not_found: 404,
  method_not_allowed: 405,
  session_busy: 409,
  session_closed: 409,
  session_expired: 410,
  session_lost: 410,
  payload_too_large: 413,
  file_too_large: 413,
  unsupported_media_type: 415,
  disk_full: 507,
  agent_error: 502,
  file_error: 502,
  capacity_exceeded: 503,
  images_missing: 503,
  vm_unavailable: 503,
  vm_boot_failed: 503,
  setup_step_failed: 500,
};

function statusForCode(code: string): number {
  return STATUS_BY_CODE[code] ?? 500;
}
