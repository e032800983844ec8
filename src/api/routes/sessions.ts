import { StringDecoder } from 'node:string_decoder';
import { HearthError } from '../../errors.js';
import type { ExecuteOutcome, SessionInfo } from '../../sessions/manager.js';
import { errorBody, parse, readJson, sendJson } from '../http.js';
import type { RouteContext } from '../router.js';
import {
  CreateSessionRequest,
  ExecuteRequest,
  type ExecuteEvent,
  type ExecuteResult,
  type Session,
} from '../schema.js';

export interface LifetimeLimits {
  defaultSeconds: number;
  /** A longer request is rejected with lifetime_too_long, never clamped. */
  maxSeconds: number;
}

export async function createSession(context: RouteContext, lifetime: LifetimeLimits) {
  const { request, response, owner, manager, logger, metrics } = context;
  const body = parse(CreateSessionRequest, await readJson(request));
  const lifetimeSeconds = body.lifetime_seconds ?? lifetime.defaultSeconds;
  if (lifetimeSeconds > lifetime.maxSeconds) {
    throw new HearthError(
      'lifetime_too_long',
      `lifetime_seconds ${lifetimeSeconds} is over this server's maximum of ` +
        `${lifetime.maxSeconds}.`,
      400,
    );
  }
  const info = await manager.create(
    {
      cpuCount: body.cpu_count,
      memoryMib: body.memory_mb,
      diskMib: body.disk_mb,
      env: body.env,
      lifetimeSeconds,
      egress: body.egress && {
        allowDomains: body.egress.allow_domains,
        allowCidrs: body.egress.allow_cidrs,
        allowPackageManagers: body.egress.allow_package_managers,
      },
    },
    owner,
  );
  metrics.increment('hearth_sessions_created_total');
  metrics.increment('hearth_boot_milliseconds_total', {}, info.bootMs ?? 0);
  logger.info({ sessionId: info.id, bootMs: info.bootMs }, 'session created');
  sendJson(response, 201, sessionJson(info));
}

export async function execute(context: RouteContext): Promise<void> {
  const { request, response, params, owner, manager, logger, metrics } = context;
  const sessionId = params[0]!;
  const body = parse(ExecuteRequest, await readJson(request));
  // A client that goes away before its result stops its call, so that the session's next
  // call does not wait behind code whose output nobody reads.
  const clientGone = new AbortController();
  response.once('close', () => {
    if (!response.writableFinished) clientGone.abort();
  });
  const options = {
    code: body.code,
    language: body.language,
    timeoutSeconds: body.timeout_seconds,
    env: body.env,
    cwd: body.cwd,
    outputLimitBytes: body.output_limit_bytes,
  };
  const finished = (outcome: ExecuteOutcome) => {
    metrics.increment('hearth_executions_total', { status: outcome.result.status });
    logger.info(
      {
        sessionId,
        language: body.language,
        status: outcome.result.status,
        exitCode: outcome.result.exit_code,
        stdoutBytes: outcome.result.stdout_bytes,
        stderrBytes: outcome.result.stderr_bytes,
        executionTime: outcome.result.execution_time,
        queuedMs: Math.round(outcome.queuedMs),
        roundTripMs: Math.round(outcome.roundTripMs),
      },
      'execution finished',
    );
  };

  if (!(request.headers.accept ?? '').includes('application/x-ndjson')) {
    const outcome = await manager.execute(sessionId, owner, options, {}, clientGone.signal);
    finished(outcome);
    sendJson(response, 200, resultJson(outcome, body.raw_output));
    return;
  }

  // Decoders keep a multibyte character that is split across chunks whole.
  const stdoutDecoder = new StringDecoder('utf8');
  const stderrDecoder = new StringDecoder('utf8');
  const send = (event: ExecuteEvent) => response.write(JSON.stringify(event) + '\n');
  const start = () => {
    if (!response.headersSent) {
      response.writeHead(200, { 'content-type': 'application/x-ndjson' });
    }
  };
  try {
    const outcome = await manager.execute(
      sessionId,
      owner,
      options,
      {
        onStdout: (chunk) => {
          start();
          const data = stdoutDecoder.write(chunk);
          if (data) send({ type: 'stdout', data });
        },
        onStderr: (chunk) => {
          start();
          const data = stderrDecoder.write(chunk);
          if (data) send({ type: 'stderr', data });
        },
      },
      clientGone.signal,
    );
    start();
    const stdoutTail = stdoutDecoder.end();
    if (stdoutTail) send({ type: 'stdout', data: stdoutTail });
    const stderrTail = stderrDecoder.end();
    if (stderrTail) send({ type: 'stderr', data: stderrTail });
    finished(outcome);
    send({ type: 'result', result: resultJson(outcome, body.raw_output) });
    response.end();
  } catch (error) {
    if (!response.headersSent) throw error;
    send({ type: 'error', ...errorBody(error, logger) });
    response.end();
  }
}

export function resultJson(outcome: ExecuteOutcome, rawOutput: boolean): ExecuteResult {
  const { result } = outcome;
  const json: ExecuteResult = {
    status: result.status,
    stdout: outcome.stdout.toString('utf8'),
    stderr: outcome.stderr.toString('utf8'),
    exit_code: result.exit_code,
    error: result.error,
    execution_time: result.execution_time,
    truncated: result.truncated,
    stdout_bytes: result.stdout_bytes,
    stderr_bytes: result.stderr_bytes,
    kernel_restarted: result.kernel_restarted,
    timing: {
      queued_ms: Math.round(outcome.queuedMs * 1000) / 1000,
      round_trip_ms: Math.round(outcome.roundTripMs * 1000) / 1000,
    },
  };
  if (result.signal !== undefined) json.signal = result.signal;
  if (rawOutput) {
    json.stdout_base64 = outcome.stdout.toString('base64');
    json.stderr_base64 = outcome.stderr.toString('base64');
  }
  return json;
}

export function sessionJson(info: SessionInfo): Session {
  return {
    id: info.id,
    state: info.state,
    close_reason: info.closeReason,
    cpu_count: info.cpuCount,
    memory_mb: info.memoryMib,
    disk_mb: info.diskMib,
    env_keys: info.envKeys,
    created_at: info.createdAt.toISOString(),
    expires_at: info.expiresAt.toISOString(),
    accelerator: info.accelerator,
    boot_ms: info.bootMs,
    start_path: info.startPath,
    kernel_release: info.kernelRelease,
    egress: info.egress && {
      allow_domains: info.egress.allowDomains,
      allow_cidrs: info.egress.allowCidrs,
      allow_package_managers: info.egress.allowPackageManagers,
    },
  };
}
