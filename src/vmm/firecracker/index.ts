export {
  DEFAULT_API_TIMEOUT_MS,
  DEFAULT_SNAPSHOT_TIMEOUT_MS,
  FirecrackerApiClient,
  unixSocketTransport,
  type FirecrackerApiClientOptions,
  type FirecrackerTransport,
  type HttpMethod,
  type RequestOptions,
  type TransportRequest,
  type TransportResponse,
} from './api-client.js';
export type * from './api-types.js';
export { findExecutable, firecrackerAvailability, type Availability } from './availability.js';
export {
  AGENT_VSOCK_PORT,
  DEFAULT_API_SOCKET_TIMEOUT_MS,
  DEFAULT_BOOT_TIMEOUT_MS,
  FirecrackerDriver,
  firecrackerBootArgs,
  type FirecrackerDriverOptions,
  type FirecrackerVmSpec,
} from './driver.js';
export { FirecrackerApiError, FirecrackerError, type FirecrackerErrorCode } from './errors.js';
export { connectHybridVsock, type HybridVsockConnection } from './hybrid-vsock.js';
export type { JailerOptions } from './launch.js';
export {
  DEFAULT_STOP_GRACE_MS,
  FirecrackerVm,
  type DriverLogger,
  type FirecrackerSnapshot,
} from './vm.js';
