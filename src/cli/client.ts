import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ErrorBody } from '../api/schema.js';
import { HearthError } from '../errors.js';

/** The hearthd the CLI sends requests to: a Unix socket or a base URL. */
export interface Target {
  socketPath?: string;
  baseUrl?: string;
  apiKey?: string;
}

export interface ApiResponse {
  status: number;
  body: unknown;
}

/** Sends a JSON request and parses the JSON response. An error envelope becomes a HearthError. */
export async function callApi(
  target: Target,
  method: string,
  path: string,
  body?: unknown,
): Promise<unknown> {
  const response = await send(target, method, path, body, 'application/json');
  const text = await readAll(response);
  const parsed = text ? JSON.parse(text) : null;
  if ((response.statusCode ?? 500) >= 400) throw errorFromBody(parsed, response.statusCode);
  return parsed;
}

/** Sends a request and returns the raw response, for NDJSON streams. */
export async function openStream(
  target: Target,
  method: string,
  path: string,
  body: unknown,
): Promise<IncomingMessage> {
  const response = await send(target, method, path, body, 'application/x-ndjson');
  if ((response.statusCode ?? 500) >= 400) {
    const text = await readAll(response);
    throw errorFromBody(text ? JSON.parse(text) : null, response.statusCode);
  }
  return response;
}

function send(
  target: Target,
  method: string,
  path: string,
  body: unknown,
  accept: string,
): Promise<IncomingMessage> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers: Record<string, string | number> = { accept };
  if (payload) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = payload.length;
  }
  if (target.apiKey) headers.authorization = `Bearer ${target.apiKey}`;
  const url = target.baseUrl ? new URL(path, target.baseUrl) : null;
  return new Promise((resolve, reject) => {
    const request = httpRequest(
      url
        ? { method, headers, hostname: url.hostname, port: url.port, path: url.pathname }
        : { method, headers, socketPath: target.socketPath, path },
      resolve,
    );
    request.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new HearthError(
          'server_unreachable',
          `Could not reach hearthd at ${target.baseUrl ?? target.socketPath}: ${error.code ?? error.message}.`,
        ),
      ),
    );
    request.end(payload);
  });
}

async function readAll(response: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function errorFromBody(body: unknown, status: number | undefined): HearthError {
  const error = (body as ErrorBody | null)?.error;
  if (error?.code) return new HearthError(error.code, error.message, status);
  return new HearthError('server_error', `hearthd responded with HTTP ${status}.`, status);
}

// The first start of a local hearthd may run the KVM probe, which takes up to 20 s.
const DAEMON_START_TIMEOUT_MS = 90_000;

/**
 * Returns the local hearthd's socket, starting hearthd in the background first when
 * nothing answers there. The daemon's output goes to logs/hearthd.log under home.
 */
export async function ensureLocalDaemon(home: string): Promise<Target> {
  const target = { socketPath: join(home, 'hearthd.sock') };
  if (await isHealthy(target)) return target;

  await mkdir(join(home, 'logs'), { recursive: true });
  const logPath = join(home, 'logs', 'hearthd.log');
  const logFd = openSync(logPath, 'a');
  const entry = fileURLToPath(new URL('../server/main.js', import.meta.url));
  const child = spawn(process.execPath, [entry], {
    detached: true,
    stdio: ['ignore', logFd, logFd],
    env: { ...process.env, HEARTH_HOME: home },
  });
  closeSync(logFd);
  let exitCode: number | null = null;
  child.once('exit', (code) => (exitCode = code ?? 1));
  child.unref();

  const deadline = Date.now() + DAEMON_START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (await isHealthy(target)) return target;
    if (exitCode !== null) {
      // Another CLI may have started hearthd at the same time; that one wins.
      if (exitCode === 0 && (await isHealthy(target))) return target;
      throw new HearthError(
        'server_start_failed',
        `hearthd exited with code ${exitCode} while starting:\n${await tail(logPath, 15)}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new HearthError(
    'server_start_failed',
    `hearthd did not answer within ${DAEMON_START_TIMEOUT_MS / 1000} s; see ${logPath}.`,
  );
}

export async function isHealthy(target: Target): Promise<boolean> {
  try {
    await callApi(target, 'GET', '/healthz');
    return true;
  } catch {
    return false;
  }
}

async function tail(path: string, lines: number): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
