// The JSON that hearthd's REST API (v1) sends and accepts, field for field. The public types
// in sessions.ts, execute.ts and files.ts are the camelCase views of these.

export interface EgressPolicyJson {
  allow_domains: string[];
  allow_cidrs: string[];
  allow_package_managers: boolean;
}

export interface SessionJson {
  id: string;
  state: 'booting' | 'ready' | 'busy' | 'closing' | 'closed' | 'failed';
  close_reason: 'closed' | 'expired' | 'vm_exited' | 'shutdown' | 'lost' | null;
  cpu_count: number;
  memory_mb: number;
  disk_mb: number;
  env_keys: string[];
  created_at: string;
  expires_at: string;
  accelerator: string | null;
  boot_ms: number | null;
  start_path: 'pool' | 'snapshot' | 'boot' | null;
  kernel_release: string | null;
  egress: EgressPolicyJson | null;
}

export interface CreateSessionJson {
  cpu_count?: number;
  memory_mb?: number;
  disk_mb?: number;
  env?: Record<string, string>;
  lifetime_seconds?: number;
  egress?: Partial<EgressPolicyJson>;
}

export interface ExecuteRequestJson {
  code: string;
  language?: 'python' | 'bash';
  timeout_seconds?: number;
  env?: Record<string, string>;
  cwd?: string | null;
  output_limit_bytes?: number;
  raw_output?: boolean;
}

export interface ExecuteResultJson {
  status: 'ok' | 'error' | 'timeout';
  stdout: string;
  stderr: string;
  exit_code: number;
  signal?: number;
  error: { name: string; value: string; traceback: string } | null;
  execution_time: number;
  truncated: boolean;
  stdout_bytes: number;
  stderr_bytes: number;
  kernel_restarted: boolean;
  stdout_base64?: string;
  stderr_base64?: string;
  timing: { queued_ms: number; round_trip_ms: number };
}

export interface ErrorJson {
  error: { code: string; message: string };
}

/** One line of a streamed execute response (Accept: application/x-ndjson). */
export type ExecuteEventJson =
  | { type: 'stdout' | 'stderr'; data: string }
  | { type: 'result'; result: ExecuteResultJson }
  | ({ type: 'error' } & ErrorJson);

export interface FileWrittenJson {
  path: string;
  size: number;
}

export interface FileEntryJson {
  name: string;
  type: 'file' | 'directory' | 'symlink' | 'other';
  size: number;
  mode: number;
  mtime: string;
}

export interface FileListJson {
  path: string;
  truncated: boolean;
  entries: FileEntryJson[];
}
