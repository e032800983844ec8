// The one schema of hearth's REST API (v1): the server validates with it, and the CLI and
// the SDK take their types from it.
import { z } from 'zod';

export const LIMITS = {
  // 8 vCPUs is the most one sandbox gets; larger jobs belong on more sessions.
  cpuCount: { min: 1, max: 8, default: 1 },
  // 128 MiB runs Python with room for small scripts; 16 GiB caps one VM on a shared host.
  memoryMib: { min: 128, max: 16384, default: 512 },
  // The scratch disk is sparse, so the default quota costs only what a session writes.
  diskMib: { min: 64, max: 65536, default: 2048 },
  // An hour fits interactive use; a day is the longest a forgotten session may live.
  lifetimeSeconds: { min: 10, max: 86400, default: 3600 },
  // A minute suits most snippets; an hour is the longest a call may hold a session.
  timeoutSeconds: { max: 3600, default: 60 },
  // 4 MiB per stream is more than a person reads and small enough to keep in memory.
  outputLimitBytes: { min: 1024, max: 64 * 1024 * 1024, default: 4 * 1024 * 1024 },
  // A larger program should be uploaded as a file.
  codeBytes: { max: 1024 * 1024 },
  // Generous for configuration, and far below what the agent channel carries in one frame.
  envEntries: { max: 1000 },
  envBytes: { max: 256 * 1024 },
  // Linux refuses to start a program with a NAME=value string over 128 KiB; half leaves room.
  envVariableBytes: { max: 64 * 1024 },
} as const;

// Lone UTF-16 surrogates cannot be encoded as UTF-8, so no process in the guest could take them.
const wellFormed = (value: string) => !/\p{Surrogate}/u.test(value);
const WELL_FORMED_MESSAGE = 'must be valid Unicode (no lone surrogates)';

const envName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'environment variable names are letters, digits and _');
const envValue = z
  .string()
  .refine((value) => !value.includes('\0'), 'values cannot contain NUL')
  .refine(wellFormed, WELL_FORMED_MESSAGE);
export const Env = z
  .record(envName, envValue)
  .refine(
    (env) =>
      Object.entries(env).every(
        ([key, value]) =>
          Buffer.byteLength(key) + Buffer.byteLength(value) <= LIMITS.envVariableBytes.max,
      ),
    `each env variable is limited to ${LIMITS.envVariableBytes.max} bytes of name and value`,
  )
  .refine(
    (env) => Object.keys(env).length <= LIMITS.envEntries.max,
    `env is limited to ${LIMITS.envEntries.max} variables`,
  )
  .refine(
    (env) =>
      Object.entries(env).reduce((sum, [key, value]) => sum + key.length + value.length, 0) <=
      LIMITS.envBytes.max,
    `env is limited to ${LIMITS.envBytes.max} characters in all`,
  );

export const EgressPolicy = z
  .object({
    allow_domains: z.array(z.string()).default([]),
    allow_cidrs: z.array(z.string()).default([]),
    allow_package_managers: z.boolean().default(false),
  })
  .strict();

export const CreateSessionRequest = z
  .object({
    cpu_count: z
      .number()
      .int()
      .min(LIMITS.cpuCount.min)
      .max(LIMITS.cpuCount.max)
      .default(LIMITS.cpuCount.default),
    memory_mb: z
      .number()
      .int()
      .min(LIMITS.memoryMib.min)
      .max(LIMITS.memoryMib.max)
      .default(LIMITS.memoryMib.default),
    disk_mb: z
      .number()
      .int()
      .min(LIMITS.diskMib.min)
      .max(LIMITS.diskMib.max)
      .default(LIMITS.diskMib.default),
    env: Env.default({}),
    lifetime_seconds: z.number().int().min(LIMITS.lifetimeSeconds.min).optional(),
    egress: EgressPolicy.optional(),
  })
  .strict();
export type CreateSessionRequest = z.infer<typeof CreateSessionRequest>;

export const ExecuteRequest = z
  .object({
    code: z
      .string()
      .refine(
        (code) => Buffer.byteLength(code) <= LIMITS.codeBytes.max,
        `code is limited to ${LIMITS.codeBytes.max} bytes`,
      )
      .refine(wellFormed, `code ${WELL_FORMED_MESSAGE}`),
    language: z.enum(['python', 'bash']).default('python'),
    timeout_seconds: z
      .number()
      .positive()
      .max(LIMITS.timeoutSeconds.max)
      .default(LIMITS.timeoutSeconds.default),
    env: Env.default({}),
    cwd: z
      .string()
      .startsWith('/', 'cwd must be an absolute path')
      .refine((value) => !value.includes('\0'), 'cwd cannot contain NUL')
      .refine(wellFormed, `cwd ${WELL_FORMED_MESSAGE}`)
      .nullable()
      .default(null),
    output_limit_bytes: z
      .number()
      .int()
      .min(LIMITS.outputLimitBytes.min)
      .max(LIMITS.outputLimitBytes.max)
      .default(LIMITS.outputLimitBytes.default),
    raw_output: z.boolean().default(false),
  })
  .strict()
  .refine((request) => request.language !== 'bash' || !request.code.includes('\0'), {
    message: 'Bash code cannot contain NUL bytes',
    path: ['code'],
  });
export type ExecuteRequest = z.infer<typeof ExecuteRequest>;

export const PythonError = z.object({
  name: z.string(),
  value: z.string(),
  traceback: z.string(),
});

/** The result of one execute call. */
export const ExecuteResult = z.object({
  status: z.enum(['ok', 'error', 'timeout']),
  stdout: z.string().describe('UTF-8, with invalid bytes replaced by U+FFFD'),
  stderr: z.string(),
  exit_code: z.number().int(),
  signal: z.number().int().optional().describe('the signal that ended a Bash call'),
  error: PythonError.nullable(),
  execution_time: z.number().describe('seconds, measured in the guest'),
  truncated: z.boolean(),
  stdout_bytes: z.number().int().describe('bytes the code wrote, including any cut off'),
  stderr_bytes: z.number().int(),
  kernel_restarted: z.boolean(),
  stdout_base64: z.string().optional(),
  stderr_base64: z.string().optional(),
  timing: z.object({ queued_ms: z.number(), round_trip_ms: z.number() }),
});
export type ExecuteResult = z.infer<typeof ExecuteResult>;

export const Session = z.object({
  id: z.string(),
  state: z.enum(['booting', 'ready', 'busy', 'closing', 'closed', 'failed']),
  close_reason: z.enum(['closed', 'expired', 'vm_exited', 'shutdown', 'lost']).nullable(),
  cpu_count: z.number().int(),
  memory_mb: z.number().int(),
  disk_mb: z.number().int(),
  env_keys: z.array(z.string()),
  created_at: z.string(),
  expires_at: z.string(),
  accelerator: z.string().nullable(),
  boot_ms: z.number().nullable().describe('from the create call to the agent answering'),
  start_path: z
    .enum(['pool', 'snapshot', 'boot'])
    .nullable()
    .describe('taken from the warm pool, restored from a snapshot, or booted'),
  kernel_release: z.string().nullable(),
  egress: EgressPolicy.nullable().describe('the policy in effect; null when the VM has no network'),
});
export type Session = z.infer<typeof Session>;

export const ErrorBody = z.object({
  error: z.object({ code: z.string(), message: z.string() }),
});
export type ErrorBody = z.infer<typeof ErrorBody>;

/** One line of a streamed execute response (Accept: application/x-ndjson). */
export type ExecuteEvent =
  | { type: 'stdout' | 'stderr'; data: string }
  | { type: 'result'; result: ExecuteResult }
  | ({ type: 'error' } & ErrorBody);

export const FileWritten = z.object({ path: z.string(), size: z.number().int() });

export const FileListing = z.object({
  path: z.string(),
  truncated: z.boolean().describe('true when the directory has more than 5000 entries'),
  entries: z.array(
    z.object({
      name: z.string(),
      type: z.enum(['file', 'directory', 'symlink', 'other']),
      size: z.number().int(),
      mode: z.number().int().describe('permission bits, e.g. 420 for 0644'),
      mtime: z.string(),
    }),
  ),
});
