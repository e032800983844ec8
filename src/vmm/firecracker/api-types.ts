// Request and response bodies of the Firecracker API endpoints that hearth uses, written from
// Firecracker's Swagger 2.0 description (API version 1.17.0-dev). Field names keep
// Firecracker's snake_case because they go on the wire unchanged.

/** Body of PUT /machine-config. */
export interface MachineConfiguration {
  /** 1 to 32, and 1 or an even number when `smt` is true. */
  vcpu_count: number;
  mem_size_mib: number;
  /** Simultaneous multithreading, x86 only. Firecracker's default is false. */
  smt?: boolean;
  /** Required before a diff snapshot can be taken. Firecracker's default is false. */
  track_dirty_pages?: boolean;
  /** `2M` needs `mem_size_mib` to be a multiple of 2. Firecracker's default is None. */
  huge_pages?: 'None' | 'Transparent' | '2M';
  /** Deprecated by Firecracker in favour of PUT /cpu-config. */
  cpu_template?: 'C3' | 'T2' | 'T2S' | 'T2CL' | 'T2A' | 'V1N1' | 'None';
}

/**
 * Body of PUT /boot-source. Firecracker opens the paths itself, so under the jailer they are
 * paths inside the jail.
 */
export interface BootSource {
  kernel_image_path: string;
  boot_args?: string;
  initrd_path?: string;
}

/** IO limits of one token bucket. */
export interface TokenBucket {
  size: number;
  refill_time: number;
  one_time_burst?: number;
}

/** IO limits of a drive or network interface. */
export interface RateLimiter {
  /** Tokens are bytes. */
  bandwidth?: TokenBucket;
  /** Tokens are operations. */
  ops?: TokenBucket;
}

/** Body of PUT /drives/{drive_id} for a virtio-block drive. */
export interface Drive {
  /** Must equal the drive_id in the path. */
  drive_id: string;
  is_root_device: boolean;
  /** Required for virtio-block drives, although the spec lists it as optional. */
  is_read_only: boolean;
  /** Required for virtio-block drives, although the spec lists it as optional. */
  path_on_host: string;
  partuuid?: string;
  cache_type?: 'Unsafe' | 'Writeback';
  io_engine?: 'Sync' | 'Async';
  rate_limiter?: RateLimiter;
}

/** Body of PATCH /drives/{drive_id}, allowed after boot. */
export interface PartialDrive {
  drive_id: string;
  path_on_host?: string;
  rate_limiter?: RateLimiter;
}

/** Body of PUT /network-interfaces/{iface_id}. */
export interface NetworkInterface {
  /** Must equal the iface_id in the path. */
  iface_id: string;
  /** Name of the host TAP device. */
  host_dev_name: string;
  guest_mac?: string;
  /** 68 to 65535. */
  mtu?: number;
  rx_rate_limiter?: RateLimiter;
  tx_rate_limiter?: RateLimiter;
}

/** Body of PUT /vsock. */
export interface Vsock {
  /** 3 or more: 0 to 2 are reserved by the vsock address family. */
  guest_cid: number;
  /** Host Unix socket that Firecracker listens on for host-initiated connections. */
  uds_path: string;
}

/** Body of PUT /actions. */
export interface InstanceActionInfo {
  /** SendCtrlAltDel exists on x86_64 only. */
  action_type: 'FlushMetrics' | 'InstanceStart' | 'SendCtrlAltDel';
}

/** Body of PATCH /vm. */
export interface VmState {
  state: 'Paused' | 'Resumed';
}

/** Body of PUT /snapshot/create. The VM must be paused first. */
export interface SnapshotCreateParams {
  snapshot_path: string;
  mem_file_path: string;
  /** Firecracker's default is Full. Diff needs `track_dirty_pages` in the machine config. */
  snapshot_type?: 'Full' | 'Diff';
}

/** Source of a restored VM's memory. */
export interface MemoryBackend {
  backend_type: 'File' | 'Uffd';
  /** The memory file, or the Unix socket of a userfaultfd page-fault handler. */
  backend_path: string;
}

/** Body of PUT /snapshot/load. Only a fresh Firecracker process accepts it. */
export interface SnapshotLoadParams {
  snapshot_path: string;
  /** Exactly one of `mem_backend` and the deprecated `mem_file_path` must be present. */
  mem_backend?: MemoryBackend;
  mem_file_path?: string;
  resume_vm?: boolean;
  track_dirty_pages?: boolean;
  network_overrides?: { iface_id: string; host_dev_name: string }[];
  /** Moves the vsock Unix socket to a new path on restore. */
  vsock_override?: { uds_path: string };
  clock_realtime?: boolean;
  huge_pages?: 'Snapshot' | 'None' | 'Transparent' | '2M';
}

/** Body of PUT /logger. Firecracker's defaults: level Info, no level or origin shown. */
export interface Logger {
  log_path?: string;
  level?: 'Error' | 'Warning' | 'Info' | 'Debug' | 'Trace' | 'Off';
  show_level?: boolean;
  show_log_origin?: boolean;
  module?: string;
}

/** Response body of GET /version. */
export interface FirecrackerVersion {
  firecracker_version: string;
}
