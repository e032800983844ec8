import { execute, type ExecuteOptions, type ExecutionResult } from './execute.js';
import { Files } from './files.js';
import { readJson, type CallOptions, type Transport } from './transport.js';
import type { CreateSessionJson, SessionJson } from './wire.js';

export interface EgressPolicy {
  /** Domain names the VM may resolve and connect to. Default none. */
  allowDomains?: string[];
  /** Address ranges the VM may connect to, e.g. `10.0.0.0/8`. Default none. */
  allowCidrs?: string[];
  /** Allow the package indexes that the host's apt, pip and npm use. Default false. */
  allowPackageManagers?: boolean;
}

export interface SessionOptions extends CallOptions {
  /** Virtual CPUs, 1–8. Default 1. */
  cpuCount?: number;
  /** Guest memory in MiB, 128–16384. Default 512. */
  memoryMb?: number;
  /** Scratch disk in MiB, 64–65536; this is the session's disk quota. Default 2048. */
  diskMb?: number;
  /** Environment variables for every call in the session. Default none. */
  env?: Record<string, string>;
  /**
   * Seconds until the server closes the session, at least 10. Default 3600; the server
   * rejects a value over its maximum (86400 unless configured lower) with
   * `lifetime_too_long`.
   */
  lifetimeSeconds?: number;
  /**
   * The network destinations the VM may reach. Default: none. A server that gives VMs no
   * network device rejects any allow rule with `egress_not_supported`.
   */
  egress?: EgressPolicy;
}

export interface SessionInfo {
  id: string;
  state: 'booting' | 'ready' | 'busy' | 'closing' | 'closed' | 'failed';
  /**
   * The reason the session ended; null while it runs. `lost` means the server restarted and
   * could not keep it.
   */
  closeReason: 'closed' | 'expired' | 'vm_exited' | 'shutdown' | 'lost' | null;
  cpuCount: number;
  /** MiB. */
  memoryMb: number;
  /** MiB. */
  diskMb: number;
  /** The names of the session's environment variables; their values are never returned. */
  envKeys: string[];
  createdAt: Date;
  /** When the session's lifetime ends. */
  expiresAt: Date;
  /** `kvm` or `tcg`; null before the VM booted. */
  accelerator: string | null;
  /** Milliseconds from the create call until the VM's agent was ready; null before then. */
  bootMs: number | null;
  /**
   * The VM's origin: taken from the warm pool, restored from a snapshot, or booted; null
   * before it started.
   */
  startPath: 'pool' | 'snapshot' | 'boot' | null;
  /** The guest's `uname -r`; null before the VM booted. */
  kernelRelease: string | null;
  /** The egress policy in effect; null when the VM has no network device. */
  egress: Required<EgressPolicy> | null;
}

// Creating a session waits for its VM to boot. hearthd allows a boot 60 s by default and
// a busy host may boot several VMs at once, so creation gets longer than other calls.
const DEFAULT_CREATE_TIMEOUT_MS = 180_000;

/** Creates and finds sessions (`hearth.sessions`). */
export class Sessions {
  constructor(private readonly transport: Transport) {}

  /**
   * Starts a session: boots its VM and returns once the VM is ready. Unless
   * `requestTimeoutMs` is given, the call waits up to 180 s for the boot.
   */
  async create(options: SessionOptions = {}): Promise<Session> {
    const { signal, requestTimeoutMs = DEFAULT_CREATE_TIMEOUT_MS } = options;
    const json = await this.transport.call(
      { method: 'POST', path: '/v1/sessions', json: createJson(options), signal, requestTimeoutMs },
      (response) => readJson<SessionJson>(response),
    );
    return new Session(this.transport, infoFromJson(json));
  }

  /** Finds a session by id; one that another API key created is reported as not found. */
  async get(id: string, options: CallOptions = {}): Promise<Session> {
    return new Session(this.transport, await fetchInfo(this.transport, id, options));
  }

  /** Lists the sessions that are booting or running. */
  async list(options: CallOptions = {}): Promise<Session[]> {
    const json = await this.transport.call(
      { ...options, method: 'GET', path: '/v1/sessions' },
      (response) => readJson<{ sessions: SessionJson[] }>(response),
    );
    return json.sessions.map((session) => new Session(this.transport, infoFromJson(session)));
  }
}

/**
 * One sandbox: a microVM whose Python variables, Bash working directory and files persist
 * from call to call until `close()` or the end of its lifetime.
 */
export class Session {
  readonly id: string;
  readonly files: Files;
  /** The state when this object last heard from the server; `refresh()` updates it. */
  info: SessionInfo;

  constructor(
    private readonly transport: Transport,
    info: SessionInfo,
  ) {
    this.id = info.id;
    this.info = info;
    this.files = new Files(transport, info.id);
  }

  /**
   * Runs Python or Bash code. A failing program is not an error: the result's `status`,
   * `exitCode` and `error` describe it. The call rejects only when hearth itself fails,
   * e.g. with SessionClosedError. Calls on one session run one at a time.
   */
  execute(code: string, options: ExecuteOptions = {}): Promise<ExecutionResult> {
    return execute(this.transport, this.id, code, options);
  }

  /** Fetches the session's current state. */
  async refresh(options: CallOptions = {}): Promise<SessionInfo> {
    this.info = await fetchInfo(this.transport, this.id, options);
    return this.info;
  }

  /**
   * Closes the session and destroys its VM and disk. Closing it again returns the same
   * closed info, for as long as the server still remembers the session (an hour by default).
   */
  async close(options: CallOptions = {}): Promise<SessionInfo> {
    const json = await this.transport.call(
      { ...options, method: 'DELETE', path: `/v1/sessions/${encodeURIComponent(this.id)}` },
      (response) => readJson<SessionJson>(response),
    );
    this.info = infoFromJson(json);
    return this.info;
  }
}

async function fetchInfo(
  transport: Transport,
  id: string,
  options: CallOptions,
): Promise<SessionInfo> {
  const json = await transport.call(
    { ...options, method: 'GET', path: `/v1/sessions/${encodeURIComponent(id)}` },
    (response) => readJson<SessionJson>(response),
  );
  return infoFromJson(json);
}

function createJson(options: SessionOptions): CreateSessionJson {
  const json: CreateSessionJson = {};
  if (options.cpuCount !== undefined) json.cpu_count = options.cpuCount;
  if (options.memoryMb !== undefined) json.memory_mb = options.memoryMb;
  if (options.diskMb !== undefined) json.disk_mb = options.diskMb;
  if (options.env !== undefined) json.env = options.env;
  if (options.lifetimeSeconds !== undefined) json.lifetime_seconds = options.lifetimeSeconds;
  if (options.egress !== undefined) {
    json.egress = {};
    if (options.egress.allowDomains) json.egress.allow_domains = options.egress.allowDomains;
    if (options.egress.allowCidrs) json.egress.allow_cidrs = options.egress.allowCidrs;
    if (options.egress.allowPackageManagers !== undefined) {
      json.egress.allow_package_managers = options.egress.allowPackageManagers;
    }
  }
  return json;
}

function infoFromJson(json: SessionJson): SessionInfo {
  return {
    id: json.id,
    state: json.state,
    closeReason: json.close_reason,
    cpuCount: json.cpu_count,
    memoryMb: json.memory_mb,
    diskMb: json.disk_mb,
    envKeys: json.env_keys,
    createdAt: new Date(json.created_at),
    expiresAt: new Date(json.expires_at),
    accelerator: json.accelerator,
    bootMs: json.boot_ms,
    startPath: json.start_path,
    kernelRelease: json.kernel_release,
    egress: json.egress && {
      allowDomains: json.egress.allow_domains,
      allowCidrs: json.egress.allow_cidrs,
      allowPackageManagers: json.egress.allow_package_managers,
    },
  };
}
