import { pipeline } from 'node:stream/promises';
import { HearthError } from '../../errors.js';
import { sendJson } from '../http.js';
import type { RouteContext } from '../router.js';

// Linux's PATH_MAX; longer paths cannot be opened in the guest anyway.
const MAX_PATH_BYTES = 4096;

/** Returns the `path` query parameter, rejecting anything that is not a plain absolute path. */
export function guestPath(url: URL): string {
  const path = url.searchParams.get('path');
  if (path === null || path === '') {
    throw new HearthError('invalid_path', 'Give the file with ?path=/absolute/path.', 400);
  }
  if (!path.startsWith('/')) {
    throw new HearthError('invalid_path', `The path ${path} is not absolute.`, 400);
  }
  if (path.includes('\0')) {
    throw new HearthError('invalid_path', 'The path contains a NUL byte.', 400);
  }
  if (path.split('/').includes('..')) {
    throw new HearthError('invalid_path', `The path ${path} contains a ".." segment.`, 400);
  }
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) {
    throw new HearthError('invalid_path', `The path is over ${MAX_PATH_BYTES} bytes.`, 400);
  }
  return path;
}

export async function uploadFile(context: RouteContext, maxUploadBytes: number): Promise<void> {
  const { request, response, params, owner, manager, logger, metrics } = context;
  const path = guestPath(context.url);
  const declared = Number(request.headers['content-length'] ?? NaN);
  if (declared > maxUploadBytes) {
    throw new HearthError(
      'file_too_large',
      `The upload is ${declared} bytes, over this server's limit of ${maxUploadBytes}.`,
      413,
    );
  }
  const size = await manager.writeFile(params[0]!, owner, path, request, maxUploadBytes);
  metrics.increment('hearth_file_bytes_total', { direction: 'upload' }, size);
  logger.info({ sessionId: params[0], size }, 'file uploaded');
  sendJson(response, 201, { path, size });
}

export async function downloadFile(context: RouteContext): Promise<void> {
  const { response, params, owner, manager, logger, metrics } = context;
  const path = guestPath(context.url);
  const { size, stream } = await manager.readFile(params[0]!, owner, path);
  const name = path.split('/').pop() || 'download';
  response.writeHead(200, {
    'content-type': 'application/octet-stream',
    'content-length': size,
    'content-disposition': `attachment; filename*=UTF-8''${encodeURIComponent(name)}`,
  });
  try {
    await pipeline(stream, response);
  } catch (error) {
    // A client that disconnects mid-download is ordinary traffic, not a server fault.
    if ((error as NodeJS.ErrnoException).code !== 'ERR_STREAM_PREMATURE_CLOSE') throw error;
    logger.info({ sessionId: params[0], path }, 'download ended early: the client left');
    return;
  }
  metrics.increment('hearth_file_bytes_total', { direction: 'download' }, size);
  logger.info({ sessionId: params[0], size }, 'file downloaded');
}

export async function listFiles(context: RouteContext): Promise<void> {
  const { response, params, owner, manager } = context;
  const listing = await manager.listFiles(params[0]!, owner, guestPath(context.url));
  sendJson(response, 200, {
    path: listing.path,
    truncated: listing.truncated,
    entries: listing.entries.map((entry) => ({
      name: entry.name,
      type: entry.type,
      size: entry.size,
      mode: entry.mode,
      mtime: new Date(entry.mtime_ns / 1e6).toISOString(),
    })),
  });
}
