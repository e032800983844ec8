// Small helpers shared by the API's route handlers: JSON bodies, validation, error bodies.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { ZodError, type ZodType, type ZodTypeDef } from 'zod';
import { HearthError } from '../errors.js';
import { LIMITS, type ErrorBody } from './schema.js';

// A JSON request body is code plus a little metadata, so the code limit bounds it.
const MAX_JSON_BODY_BYTES = LIMITS.codeBytes.max * 2 + 64 * 1024;

export function parse<T>(schema: ZodType<T, ZodTypeDef, unknown>, value: unknown): T {
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

export async function readJson(request: IncomingMessage): Promise<unknown> {
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

export function sendJson(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  response.end(text);
}

export function errorBody(error: unknown, logger: Logger): ErrorBody {
  if (error instanceof HearthError) {
    return { error: { code: error.code, message: error.message } };
  }
  logger.error({ err: error }, 'unexpected error');
  return { error: { code: 'internal_error', message: 'hearthd hit an unexpected error.' } };
}

export function sendError(response: ServerResponse, error: unknown, logger: Logger): void {
  const body = errorBody(error, logger);
  const status = error instanceof HearthError ? error.status : 500;
  if (response.headersSent) {
    response.destroy();
    return;
  }
  sendJson(response, status, body);
}
