import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { SessionManager } from '../sessions/manager.js';
import type { Metrics } from './metrics.js';

/** What a route handler gets: the parsed request and the services it may call. */
export interface RouteContext {
  request: IncomingMessage;
  response: ServerResponse;
  url: URL;
  /** Captures of the route's pattern, decoded. */
  params: string[];
  /** Who sent the request: an API key id, or "local". */
  owner: string;
  manager: SessionManager;
  metrics: Metrics;
  logger: Logger;
}

export interface Route {
  method: string;
  pattern: RegExp;
  /** Routes such as /healthz answer without an API key. */
  public?: boolean;
  handler: (context: RouteContext) => Promise<void>;
}
