import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { SessionManager } from '../sessions/manager.js';
import type { Metrics } from './metrics.js';

/** The context of a route handler: the parsed request and the services it may call. */
export interface RouteContext {
  request: IncomingMessage;
  response: ServerResponse;
  url: URL;
  /** Captures of the route's pattern, decoded. */
  params: string[];
  /** The sender of the request: an API key id, or "local". */
  owner: string;
  manager: SessionManager;
  metrics: Metrics;
  logger: Logger;
}

export interface Route {
  method: string;
  pattern: RegExp;
  /** Routes such as /healthz respond without an API key. */
  public?: boolean;
  handler: (context: RouteContext) => Promise<void>;
}
