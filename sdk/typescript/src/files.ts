import { InvalidRequestError } from './errors.js';
import { readJson, type CallOptions, type Transport } from './transport.js';
import type { FileListJson, FileWrittenJson } from './wire.js';

/**
 * File contents to upload. Strings are sent as UTF-8. Streams and async iterables (a Node
 * `fs.createReadStream`, for one) are sent as they are read, so a large file never sits in
 * memory whole.
 */
export type FileData =
  | string
  | Uint8Array
  | ArrayBuffer
  | Blob
  | ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array | string>;

export interface FileInfo {
  /** The absolute path in the guest. */
  path: string;
  size: number;
}

export interface FileEntry {
  name: string;
  /** The absolute path in the guest: the listed directory joined with `name`. */
  path: string;
  type: 'file' | 'directory' | 'symlink' | 'other';
  /** Bytes. */
  size: number;
  /** Permission bits, e.g. 0o644. */
  mode: number;
  mtime: Date;
}

export interface FileListing {
  /** The listed directory. */
  path: string;
  /** Entries in no particular order. */
  entries: FileEntry[];
  /** True when the directory had more entries than the server returns in one listing. */
  truncated: boolean;
}

export interface ReadOptions extends CallOptions {
  /**
   * The result type. `'text'` (the default) decodes UTF-8, with U+FFFD for invalid bytes.
   * `'bytes'` returns a Uint8Array. `'stream'` returns the body as it arrives, and then
   * `requestTimeoutMs` covers only the wait for the response to start.
   */
  format?: 'text' | 'bytes' | 'stream';
}

export interface DownloadOptions extends CallOptions {
  /**
   * The local file name; default the last component of the remote path. A name with `/`
   * or `\`, `.`, `..`, NUL, or one that is empty, is rejected with `invalid_path`.
   */
  name?: string;
}

/**
 * The files of one session (`session.files`). Paths in the guest are absolute; a relative
 * path, `..` or NUL is rejected with `invalid_path`.
 */
export class Files {
  constructor(
    private readonly transport: Transport,
    private readonly sessionId: string,
  ) {}

  /** Writes a file in the guest, replacing any file there, and returns its path and size. */
  async write(path: string, data: FileData, options: CallOptions = {}): Promise<FileInfo> {
    return this.transport.call(
      {
        ...options,
        method: 'PUT',
        path: this.route('files'),
        query: { path },
        body: toBody(data),
      },
      (response) => readJson<FileWrittenJson>(response),
    );
  }

  read(path: string, options?: ReadOptions & { format?: 'text' }): Promise<string>;
  read(path: string, options: ReadOptions & { format: 'bytes' }): Promise<Uint8Array>;
  read(
    path: string,
    options: ReadOptions & { format: 'stream' },
  ): Promise<ReadableStream<Uint8Array>>;
  /** Reads a file from the guest. */
  async read(
    path: string,
    options: ReadOptions = {},
  ): Promise<string | Uint8Array | ReadableStream<Uint8Array>> {
    const { format = 'text', ...callOptions } = options;
    const spec = {
      ...callOptions,
      method: 'GET' as const,
      path: this.route('files'),
      query: { path },
      accept: 'application/octet-stream',
    };
    if (format === 'stream') return this.transport.stream(spec);
    if (format === 'bytes') {
      return this.transport.call(spec, async (response) => {
        return new Uint8Array(await response.arrayBuffer());
      });
    }
    return this.transport.call(spec, (response) => response.text());
  }

  /** Lists a directory in the guest. */
  async list(path: string, options: CallOptions = {}): Promise<FileListing> {
    const json = await this.transport.call(
      { ...options, method: 'GET', path: this.route('files/list'), query: { path } },
      (response) => readJson<FileListJson>(response),
    );
    const directory = json.path.endsWith('/') ? json.path : `${json.path}/`;
    const entries = json.entries.map((entry) => ({
      name: entry.name,
      path: directory + entry.name,
      type: entry.type,
      size: entry.size,
      mode: entry.mode,
      mtime: new Date(entry.mtime),
    }));
    return { path: json.path, entries, truncated: json.truncated };
  }

  /**
   * Downloads one file from the guest into `localDir` (Node only) and returns the local
   * path. The bytes go to a new temporary file in `localDir`, which is then renamed over
   * the target, so nothing is written outside `localDir`, even through a symlink already
   * there, and a failed download leaves no partial file. Local file system failures, such
   * as a missing `localDir`, reject with Node's own error.
   */
  async downloadTo(
    remotePath: string,
    localDir: string,
    options: DownloadOptions = {},
  ): Promise<string> {
    const { name = lastComponent(remotePath), ...callOptions } = options;
    const { join, resolve, dirname } = await import('node:path');
    checkLocalName(name);
    const directory = resolve(localDir);
    const target = resolve(directory, name);
    if (dirname(target) !== directory) {
      throw new InvalidRequestError(
        'invalid_path',
        `The local name ${JSON.stringify(name)} resolves outside ${directory}.`,
      );
    }

    const { createWriteStream } = await import('node:fs');
    const { rename, rm } = await import('node:fs/promises');
    const { pipeline } = await import('node:stream/promises');
    const { randomUUID } = await import('node:crypto');
    const stream = await this.read(remotePath, { ...callOptions, format: 'stream' });
    const temporary = join(directory, `.hearth-download-${randomUUID()}.part`);
    try {
      // 'wx' fails if the name exists, so the open cannot follow a planted symlink.
      await pipeline(chunksOf(stream), createWriteStream(temporary, { flags: 'wx' }));
      await rename(temporary, target);
    } catch (error) {
      await rm(temporary, { force: true });
      throw error;
    }
    return target;
  }

  private route(suffix: string): string {
    return `/v1/sessions/${encodeURIComponent(this.sessionId)}/${suffix}`;
  }
}

function toBody(data: FileData): Uint8Array | Blob | ReadableStream<Uint8Array> {
  if (typeof data === 'string') return new TextEncoder().encode(data);
  if (data instanceof Uint8Array || data instanceof Blob || data instanceof ReadableStream) {
    return data;
  }
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (data !== null && typeof data === 'object' && Symbol.asyncIterator in data) {
    return streamFrom(data);
  }
  throw new InvalidRequestError(
    'invalid_request',
    'File data must be a string, Uint8Array, ArrayBuffer, Blob, ReadableStream or an ' +
      'async iterable of bytes.',
  );
}

/** Wraps an async iterable in a stream that reads it only as fast as fetch sends. */
function streamFrom(source: AsyncIterable<Uint8Array | string>): ReadableStream<Uint8Array> {
  const iterator = source[Symbol.asyncIterator]();
  const encoder = new TextEncoder();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await iterator.next();
      if (done) {
        controller.close();
      } else {
        controller.enqueue(typeof value === 'string' ? encoder.encode(value) : value);
      }
    },
    async cancel(reason) {
      await iterator.return?.(reason);
    },
  });
}

async function* chunksOf(stream: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  let finished = false;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      yield value;
    }
    finished = true;
  } finally {
    // When writing fails first, cancelling frees the connection that still has the body.
    if (!finished) await reader.cancel().catch(() => undefined);
  }
}

function lastComponent(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

function checkLocalName(name: string): void {
  if (name === '' || name === '.' || name === '..' || /[/\\\0]/.test(name)) {
    throw new InvalidRequestError(
      'invalid_path',
      `${JSON.stringify(name)} cannot be a local file name: it must be one path component, ` +
        'without / or \\, and not . or ..; pass options.name to choose another.',
    );
  }
}
