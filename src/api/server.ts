import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { StringDecoder } from 'node:string_decoder';
import type { Logger } from 'pino';
import { ZodError, type ZodType, type ZodTypeDef } from 'zod';
import { HearthError } from '../errors.js';
import type { ExecuteOutcome, SessionInfo, SessionManager } from '../sessions/manager.js';
import {
  CreateSessionRequest,
  ExecuteRequest,
  LIMITS,
  type ErrorBody,
  type ExecuteEvent,
  type ExecuteResult,
  type Session,
} from './schema.js';

export interface ApiOptions {
  manager: SessionManager;
  logger: Logger;
  /** Longest lifetime a session may ask for; longer requests are rejected. */
  maxLifetimeSeconds?: number;
  defaultLifetimeSeconds?: number;
}

// A JSON request body is code plus a little metadata, so the code limit bounds it.
const MAX_JSON_BODY_BYTES = LIMITS.codeBytes.max * 2 + 64 * 1024;

type Handler = (context: RequestContext) => Promise<void>;

interface RequestContext {
  request: IncomingMessage;
  response: ServerResponse;
  params: string[];
  logger: Logger;
}

interface Route {
  method: string;
  pattern: RegExp;
  handler: Handler;
}

/** Builds the request handler of hearthd's HTTP API. It parses and validates each request,
 * then hands a typed call to the session manager. */
export function createApiHandler(options: ApiOptions) {
  const { manager } = options;
  const maxLifetime = options.maxLifetimeSeconds ?? LIMITS.lifetimeSeconds.max;
  const defaultLifetime = Math.min(
    options.defaultLifetimeSeconds ?? LIMITS.lifetimeSeconds.default,
    maxLifetime,
  );

  const routes: Route[] = [
    {
      method: 'GET',
      pattern: /^\/healthz$/,
      handler: async ({ response }) => sendJson(response, 200, { status: 'ok' }),
    },
    {
      method: 'POST',
      pattern: /^\/v1\/sessions$/,
      handler: async ({ request, response, logger }) => {
        const body = parse(CreateSessionRequest, await readJson(request));
        const lifetimeSeconds = body.lifetime_seconds ?? defaultLifetime;
        if (lifetimeSeconds > maxLifetime) {
          throw new HearthError(
            'lifetime_too_long',
            `lifetime_seconds ${lifetimeSeconds} is over this server's maximum of ${maxLifetime}.`,
            400,
          );
        }
        const info = await manager.create({
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
        });
        logger.info({ sessionId: info.id, bootMs: info.bootMs }, 'session created');
        sendJson(response, 201, sessionJson(info));
      },
    },
    {
      method: 'GET',
      pattern: /^\/v1\/sessions$/,
      handler: async ({ response }) =>
        sendJson(response, 200, { sessions: manager.list().map(sessionJson) }),
    },
    {
      method: 'GET',
      pattern: /^\/v1\/sessions\/([^/]+)$/,
      handler: async ({ response, params }) =>
        sendJson(response, 200, sessionJson(manager.get(params[0]!))),
    },
    {
      method: 'DELETE',
      pattern: /^\/v1\/sessions\/([^/]+)$/,
      handler: async ({ response, params, logger }) => {
        await manager.close(params[0]!);
        logger.info({ sessionId: params[0] }, 'session closed');
        sendJson(response, 200, sessionJson(manager.get(params[0]!)));
      },
    },
    {
      method: 'POST',
      pattern: /^\/v1\/sessions\/([^/]+)\/execute$/,
      handler: async (context) => execute(manager, context),
    },
  ];

  return async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const requestId = randomUUID();
    const logger = options.logger.child({ requestId });
    const startedAt = performance.now();
    const path = new URL(request.url ?? '/', 'http://hearth').pathname;
    try {
      const matches = routes.filter((route) => route.pattern.test(path));
      if (matches.length === 0) {
        throw new HearthError('not_found', `No API route ${path}.`);
      }
      const route = matches.find((candidate) => candidate.method === request.method);
      if (!route) {
        throw new HearthError('method_not_allowed', `${request.method} is not allowed on ${path}.`);
      }
      const params = (route.pattern.exec(path) ?? []).slice(1).map(decodeURIComponent);
      await route.handler({ request, response, params, logger });
    } catch (error) {
      sendError(response, error, logger);
    } finally {
      logger.info(
        {
          method: request.method,
          path,
          status: response.statusCode,
          durationMs: Math.round(performance.now() - startedAt),
        },
        'request',
      );
    }
  };
}

async function execute(manager: SessionManager, context: RequestContext): Promise<void> {
  const { request, response, params, logger } = context;
  const sessionId = params[0]!;
  const body = parse(ExecuteRequest, await readJson(request));
  const options = {
    code: body.code,
    language: body.language,
    timeoutSeconds: body.timeout_seconds,
    env: body.env,
    cwd: body.cwd,
    outputLimitBytes: body.output_limit_bytes,
  };
  const streaming = (request.headers.accept ?? '').includes('application/x-ndjson');

  if (!streaming) {
    const outcome = await manager.execute(sessionId, options);
    logExecution(logger, sessionId, outcome);
    sendJson(response, 200, resultJson(outcome, body.raw_output));
    return;
  }

  // Decoders keep a multibyte character that is split across chunks whole.
  const stdoutDecoder = new StringDecoder('utf8');
  const stderrDecoder = new StringDecoder('utf8');
  const send = (event: ExecuteEvent) => response.write(JSON.stringify(event) + '\n');
  const started = () => {
    if (!response.headersSent) {
      response.writeHead(200, { 'content-type': 'application/x-ndjson' });
    }
  };
  try {
    const outcome = await manager.execute(sessionId, options, {
      onStdout: (chunk) => {
        started();
        const data = stdoutDecoder.write(chunk);
        if (data) send({ type: 'stdout', data });
      },
      onStderr: (chunk) => {
        started();
        const data = stderrDecoder.write(chunk);
        if (data) send({ type: 'stderr', data });
      },
    });
    started();
    const stdoutTail = stdoutDecoder.end();
    if (stdoutTail) send({ type: 'stdout', data: stdoutTail });
    const stderrTail = stderrDecoder.end();
    if (stderrTail) send({ type: 'stderr', data: stderrTail });
    logExecution(logger, sessionId, outcome);
    send({ type: 'result', result: resultJson(outcome, body.raw_output) });
    response.end();
  } catch (error) {
    if (!response.headersSent) throw error;
    send({ type: 'error', ...errorBody(error, logger) });
    response.end();
  }
}

function logExecution(logger: Logger, sessionId: string, outcome: ExecuteOutcome): void {
  logger.info(
    {
      sessionId,
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
    kernel_release: info.kernelRelease,
    egress: info.egress && {
      allow_domains: info.egress.allowDomains,
      allow_cidrs: info.egress.allowCidrs,
      allow_package_managers: info.egress.allowPackageManagers,
    },
  };
}

function parse<T>(schema: ZodType<T, ZodTypeDef, unknown>, value: unknown): T {
  try {
    return schema.parse(value);
  } catch (error) {
    if (error instanceof ZodError) {
      const details = error.issues
        .map((issue) => `${issue.path.join('.') || 'body'}: ${issue.message}`)
        .join('; ');
      throw new HearthError('invalid_request', `Invalid request: ${details}.`, 400);
    }
    throw error;
  }
}

async function readJson(request: IncomingMessage): Promise<unknown> {
  const type = request.headers['content-type'] ?? 'application/json';
  if (!type.startsWith('application/json')) {
    throw new HearthError('unsupported_media_type', 'Send the request body as application/json.');
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > MAX_JSON_BODY_BYTES) {
      throw new HearthError(
        'payload_too_large',
        `The request body is over ${MAX_JSON_BODY_BYTES} bytes; upload large programs as files.`,
      );
    }
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text.trim()) return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new HearthError('invalid_request', 'The request body is not valid JSON.', 400);
  }
}

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  response.end(text);
}

function errorBody(error: unknown, logger: Logger): ErrorBody {
  if (error instanceof HearthError) {
    return { error: { code: error.code, message: error.message } };
  }
  logger.error({ err: error }, 'unexpected error');
  return { error: { code: 'internal_error', message: 'hearthd hit an unexpected error.' } };
}

function sendError(response: ServerResponse, error: unknown, logger: Logger): void {
  const body = errorBody(error, logger);
  const status = error instanceof HearthError ? error.status : 500;
  if (response.headersSent) {
    response.end();
    return;
  }
  sendJson(response, status, body);
}
