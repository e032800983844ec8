import { readFile } from 'node:fs/promises';
import type { ExecuteEvent, ExecuteResult, Session } from '../api/schema.js';
import { HearthError } from '../errors.js';
import { callApi, openStream, type Target } from './client.js';
import type { CurrentSession } from './session-store.js';

export interface ExecuteArgs {
  code: string;
  language: 'python' | 'bash';
  json: boolean;
  timeoutSeconds?: number;
  env: Record<string, string>;
  cwd?: string;
  sessionId?: string;
}

export interface SessionArgs {
  cpuCount?: number;
  memoryMib?: number;
  diskMib?: number;
  lifetimeSeconds?: number;
  env: Record<string, string>;
  egress?: { allow_domains: string[]; allow_cidrs: string[]; allow_package_managers: boolean };
}

// Errors that mean the session is gone for good, so the CLI starts a fresh one.
const SESSION_GONE = new Set([
  'session_not_found',
  'session_closed',
  'session_expired',
  'session_lost',
]);

export async function createSession(target: Target, args: SessionArgs): Promise<Session> {
  const body: Record<string, unknown> = { env: args.env };
  if (args.cpuCount !== undefined) body.cpu_count = args.cpuCount;
  if (args.memoryMib !== undefined) body.memory_mb = args.memoryMib;
  if (args.lifetimeSeconds !== undefined) body.lifetime_seconds = args.lifetimeSeconds;
  if (args.diskMib !== undefined) body.disk_mb = args.diskMib;
  if (args.egress) body.egress = args.egress;
  return (await callApi(target, 'POST', '/v1/sessions', body)) as Session;
}

/**
 * Runs code in the given session, or in the CLI's current one, creating it when there is
 * none or it has ended. Returns the exit code the CLI should exit with.
 */
export async function executeCommand(
  target: Target,
  current: CurrentSession,
  args: ExecuteArgs,
): Promise<number> {
  let sessionId = args.sessionId ?? (await current.read());
  if (!sessionId) {
    sessionId = (await createSession(target, { env: {} })).id;
    await current.write(sessionId);
  }

  const body: Record<string, unknown> = {
    code: args.code,
    language: args.language,
    env: args.env,
  };
  if (args.timeoutSeconds !== undefined) body.timeout_seconds = args.timeoutSeconds;
  if (args.cwd !== undefined) body.cwd = args.cwd;

  let result: ExecuteResult;
  try {
    result = await runOnce(target, sessionId, body, args.json);
  } catch (error) {
    if (args.sessionId || !(error instanceof HearthError) || !SESSION_GONE.has(error.code)) {
      throw error;
    }
    const replacement = await createSession(target, { env: {} });
    process.stderr.write(
      `hearth: the current session ${sessionId} has ended (${error.code}); ` +
        `started ${replacement.id}, without the old session's state.\n`,
    );
    await current.write(replacement.id);
    result = await runOnce(target, replacement.id, body, args.json);
  }
  return exitCodeFor(result);
}

async function runOnce(
  target: Target,
  sessionId: string,
  body: Record<string, unknown>,
  json: boolean,
): Promise<ExecuteResult> {
  const path = `/v1/sessions/${encodeURIComponent(sessionId)}/execute`;
  if (json) {
    const result = (await callApi(target, 'POST', path, body)) as ExecuteResult;
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    return result;
  }

  const stream = await openStream(target, 'POST', path, body);
  let buffered = '';
  let result: ExecuteResult | null = null;
  for await (const chunk of stream) {
    buffered += (chunk as Buffer).toString('utf8');
    let newline: number;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const event = JSON.parse(buffered.slice(0, newline)) as ExecuteEvent;
      buffered = buffered.slice(newline + 1);
      if (event.type === 'result') result = event.result;
      else if (event.type === 'error') throw new HearthError(event.error.code, event.error.message);
      else if (event.type === 'stdout') process.stdout.write(event.data);
      else process.stderr.write(event.data);
    }
  }
  if (!result) {
    throw new HearthError('server_error', 'hearthd ended the stream without a result.');
  }
  reportFailure(result);
  return result;
}

/** Prints a Python error's traceback and hearth's own notes about the call to stderr. */
function reportFailure(result: ExecuteResult): void {
  if (result.error && result.error.traceback) process.stderr.write(result.error.traceback);
  else if (result.error) process.stderr.write(`${result.error.name}: ${result.error.value}\n`);
  if (result.status === 'timeout') process.stderr.write('hearth: the call timed out\n');
  if (result.truncated) {
    process.stderr.write(
      `hearth: output truncated (stdout ${result.stdout_bytes} bytes, ` +
        `stderr ${result.stderr_bytes} bytes in all)\n`,
    );
  }
}

/** Exit code of `hearth execute`: the program's own, and 1 for a Python exception. */
export function exitCodeFor(result: ExecuteResult): number {
  if (result.status === 'ok') return 0;
  if (result.exit_code > 0 && result.exit_code < 256) return result.exit_code;
  return 1;
}

export async function readCode(options: { code?: string; file?: string }): Promise<string> {
  if (options.code !== undefined) return options.code;
  if (options.file === '-') return readStdin();
  if (options.file !== undefined) return readFile(options.file, 'utf8');
  throw new HearthError('invalid_request', 'Give the code with --code, or a file with --file.', 2);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
