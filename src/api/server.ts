import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { HearthError } from '../errors.js';
import type { SessionManager } from '../sessions/manager.js';
import type { Store } from '../store/db.js';
import { authenticate } from './auth.js';
import { sendError, sendJson } from './http.js';
import { Metrics } from './metrics.js';
import { openApiDocument } from './openapi.js';
import type { Route } from './router.js';
import { downloadFile, listFiles, uploadFile } from './routes/files.js';
import { createSession, execute, sessionJson } from './routes/sessions.js';
import { LIMITS } from './schema.js';

export interface ApiOptions {
  manager: SessionManager;
  store: Store;
  logger: Logger;
  /** Require an API key on every request; hearthd sets it when it listens on TCP. */
  requireKey?: boolean;
  /** Maximum lifetime a session may request. Longer requests are rejected. */
  maxLifetimeSeconds?: number;
  defaultLifetimeSeconds?: number;
  /** Largest file upload accepted, in bytes. */
  maxUploadBytes?: number;
  metrics?: Metrics;
}

// Reading and dropping this much of a rejected body is cheaper for a client than a reset.
const MAX_DRAINED_BODY_BYTES = 64 * 1024 * 1024;
// Half a GiB fits data sets and wheels; larger transfers should not pass through the API.
export const DEFAULT_MAX_UPLOAD_BYTES = 512 * 1024 * 1024;

/** Parses a request target; one that is not a valid path gets 400 instead of a crash. */
function parseUrl(target: string | undefined): URL {
  try {
    // The path is prefixed so that a target like "//host" stays a path, not an authority.
    return new URL(`http://hearth/${(target ?? '/').replace(/^\/+/, '')}`);
  } catch {
    throw new HearthError('invalid_request', 'The request target is not a valid path.', 400);
  }
}

function decodeParam(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    throw new HearthError('not_found', `No API route with the malformed segment ${value}.`, 404);
  }
}

/** Builds the request handler of hearthd's HTTP API. It parses and validates each request,
 * then hands a typed call to the session manager. */
export function createApiHandler(options: ApiOptions) {
  const { manager, store } = options;
  const metrics = options.metrics ?? new Metrics();
  const maxLifetime = options.maxLifetimeSeconds ?? LIMITS.lifetimeSeconds.max;
  const lifetime = {
    maxSeconds: maxLifetime,
    defaultSeconds: Math.min(
      options.defaultLifetimeSeconds ?? LIMITS.lifetimeSeconds.default,
      maxLifetime,
    ),
  };
  const maxUploadBytes = options.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES;
  const session = '/v1/sessions/([^/]+)';

  const routes: Route[] = [
    {
      method: 'GET',
      pattern: /^\/healthz$/,
      public: true,
      handler: async ({ response }) => sendJson(response, 200, { status: 'ok' }),
    },
    {
      method: 'GET',
      pattern: /^\/metrics$/,
      public: true,
      handler: async ({ response }) => {
        const text = metrics.render({ hearth_sessions_active: manager.activeCount() });
        response.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
        response.end(text);
      },
    },
    {
      method: 'GET',
      pattern: /^\/v1\/openapi\.json$/,
      public: true,
      handler: async ({ response }) => sendJson(response, 200, openApiDocument()),
    },
    {
      method: 'POST',
      pattern: /^\/v1\/sessions$/,
      handler: (context) => createSession(context, lifetime),
    },
    {
      method: 'GET',
      pattern: /^\/v1\/sessions$/,
      handler: async ({ response, owner }) =>
        sendJson(response, 200, { sessions: manager.list(owner).map(sessionJson) }),
    },
    {
      method: 'GET',
      pattern: new RegExp(`^${session}$`),
      handler: async ({ response, params, owner }) =>
        sendJson(response, 200, sessionJson(manager.get(params[0]!, owner))),
    },
    {
      method: 'DELETE',
      pattern: new RegExp(`^${session}$`),
      handler: async ({ response, params, owner, logger }) => {
        await manager.close(params[0]!, owner);
        logger.info({ sessionId: params[0] }, 'session closed');
        sendJson(response, 200, sessionJson(manager.get(params[0]!, owner)));
      },
    },
    { method: 'POST', pattern: new RegExp(`^${session}/execute$`), handler: execute },
    {
      method: 'PUT',
      pattern: new RegExp(`^${session}/files$`),
      handler: (context) => uploadFile(context, maxUploadBytes),
    },
    { method: 'GET', pattern: new RegExp(`^${session}/files$`), handler: downloadFile },
    { method: 'GET', pattern: new RegExp(`^${session}/files/list$`), handler: listFiles },
  ];

  return async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const requestId = randomUUID();
    const logger = options.logger.child({ requestId });
    const startedAt = performance.now();
    let url = new URL('/', 'http://hearth');
    try {
      url = parseUrl(request.url);
      const matches = routes.filter((route) => route.pattern.test(url.pathname));
      if (matches.length === 0) {
        throw new HearthError('not_found', `No API route ${url.pathname}.`);
      }
      const route = matches.find((candidate) => candidate.method === request.method);
      if (!route) {
        throw new HearthError(
          'method_not_allowed',
          `${request.method} is not allowed on ${url.pathname}.`,
        );
      }
      const owner = route.public ? '' : authenticate(request, store, options.requireKey ?? false);
      const params = (route.pattern.exec(url.pathname) ?? []).slice(1).map(decodeParam);
      await route.handler({ request, response, url, params, owner, manager, metrics, logger });
    } catch (error) {
      if (error instanceof HearthError) {
        metrics.increment('hearth_api_errors_total', { code: error.code });
      }
      // A request answered before its body was read, such as an upload over the limit,
      // must not leave the rest of its body in the way of the client's next request on the
      // same connection. A body of known, moderate size is read and dropped, so the client
      // gets the answer; any other body ends the connection.
      const declared = Number(request.headers['content-length'] ?? NaN);
      const drainable = Number.isFinite(declared) && declared <= MAX_DRAINED_BODY_BYTES;
      if (!request.complete && !drainable && !response.headersSent) {
        response.setHeader('connection', 'close');
      }
      sendError(response, error, logger);
      if (!request.complete) request.resume();
    } finally {
      logger.info(
        {
          method: request.method,
          path: url.pathname,
          status: response.statusCode,
          durationMs: Math.round(performance.now() - startedAt),
        },
        'request',
      );
    }
  };
}
