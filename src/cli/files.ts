import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { basename, dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { HearthError } from '../errors.js';
import type { Target } from './client.js';

function filesPath(sessionId: string, remotePath: string): string {
  return (
    `/v1/sessions/${encodeURIComponent(sessionId)}/files?path=` + encodeURIComponent(remotePath)
  );
}

function rawRequest(
  target: Target,
  method: string,
  path: string,
  headers: Record<string, string | number>,
): { request: ReturnType<typeof httpRequest>; response: Promise<IncomingMessage> } {
  if (target.apiKey) headers.authorization = `Bearer ${target.apiKey}`;
  const url = target.baseUrl ? new URL(path, target.baseUrl) : null;
  let request!: ReturnType<typeof httpRequest>;
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    request = httpRequest(
      url
        ? {
            method,
            headers,
            hostname: url.hostname,
            port: url.port,
            path: url.pathname + url.search,
          }
        : { method, headers, socketPath: target.socketPath, path },
      resolve,
    );
    request.once('error', (error: NodeJS.ErrnoException) =>
      reject(new HearthError('server_unreachable', `Could not reach hearthd: ${error.message}.`)),
    );
  });
  return { request, response };
}

async function failIfError(response: IncomingMessage): Promise<void> {
  if ((response.statusCode ?? 500) < 400) return;
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  const body = JSON.parse(Buffer.concat(chunks).toString() || 'null') as {
    error?: { code: string; message: string };
  } | null;
  throw new HearthError(
    body?.error?.code ?? 'server_error',
    body?.error?.message ?? `hearthd answered with HTTP ${response.statusCode}.`,
    response.statusCode,
  );
}

/** Streams a local file to the guest. Returns the size the guest wrote. */
export async function uploadCommand(
  target: Target,
  sessionId: string,
  localPath: string,
  remotePath: string,
): Promise<number> {
  const { size } = await stat(localPath);
  const { request, response } = rawRequest(target, 'PUT', filesPath(sessionId, remotePath), {
    'content-type': 'application/octet-stream',
    'content-length': size,
  });
  // hearthd may reject an upload before it has read the whole body, and then closes the
  // connection, so the send fails too. Its error response gives the reason, so it comes first.
  const sent = pipeline(createReadStream(localPath), request).then(
    () => null,
    (error: Error) => error,
  );
  const answer = await response;
  await failIfError(answer);
  const sendError = await sent;
  if (sendError) {
    throw new HearthError('upload_failed', `The upload stopped: ${sendError.message}.`);
  }
  const chunks: Buffer[] = [];
  for await (const chunk of answer) chunks.push(chunk as Buffer);
  return (JSON.parse(Buffer.concat(chunks).toString()) as { size: number }).size;
}

/**
 * Streams a guest file to a local path. When the path is an existing directory, the file
 * keeps its guest name inside it. The bytes go to a temporary file that is renamed into
 * place only when the download completes.
 */
export async function downloadCommand(
  target: Target,
  sessionId: string,
  remotePath: string,
  localPath: string,
): Promise<string> {
  let destination = localPath;
  const existing = await stat(localPath).catch(() => null);
  if (existing?.isDirectory()) destination = join(localPath, basename(remotePath));
  const { request, response } = rawRequest(target, 'GET', filesPath(sessionId, remotePath), {});
  request.end();
  const answer = await response;
  await failIfError(answer);
  const temporary = join(dirname(destination), `.${basename(destination)}.hearth-partial`);
  try {
    await pipeline(answer, createWriteStream(temporary));
    await rename(temporary, destination);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
  return destination;
}
