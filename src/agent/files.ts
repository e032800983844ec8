import { Readable } from 'node:stream';
import { HearthError } from '../errors.js';
import { FrameType, encodeFrame, encodeJsonFrame, type Frame } from './protocol.js';

/** The part of AgentClient that file transfers use. */
export interface FrameChannel {
  allocateCallId(): number;
  register(callId: number, onFrame: (frame: Frame) => void, reject: (error: Error) => void): void;
  unregister(callId: number): void;
  /** Writes a frame and resolves once the channel can take more. */
  writeFrame(frame: Buffer): Promise<void>;
}

// Chunks (256 KiB each) a download may have in flight before its reader takes any: enough
// to keep the channel busy, and at most 2 MiB buffered per download.
const DOWNLOAD_WINDOW_CHUNKS = 8;

export interface FileEntry {
  name: string;
  type: 'file' | 'directory' | 'symlink' | 'other';
  size: number;
  mode: number;
  mtime_ns: number;
}

export interface FileListing {
  path: string;
  entries: FileEntry[];
  truncated: boolean;
}

// Frames of this size keep the channel busy without holding much in memory at once.
const UPLOAD_CHUNK_BYTES = 256 * 1024;

/**
 * Streams `source` into the guest file at `path`. Throws file_too_large, without leaving a
 * file behind, once more than `limitBytes` arrive. Returns the size written.
 */
export async function uploadFile(
  channel: FrameChannel,
  path: string,
  source: AsyncIterable<Buffer | Uint8Array>,
  limitBytes: number,
): Promise<number> {
  const callId = channel.allocateCallId();
  let failure: Error | null = null;
  const done = new Promise<number>((resolve, reject) => {
    channel.register(
      callId,
      (frame) => {
        channel.unregister(callId);
        if (frame.type === FrameType.fileDone) {
          resolve((JSON.parse(frame.payload.toString()) as { size: number }).size);
        } else {
          failure = agentError(frame);
          reject(failure);
        }
      },
      (error) => {
        failure = error;
        reject(error);
      },
    );
  });
  done.catch(() => undefined);

  await channel.writeFrame(encodeJsonFrame(FrameType.fileWriteBegin, callId, { path }));
  let size = 0;
  try {
    for await (const chunk of source) {
      if (failure) break;
      size += chunk.length;
      if (size > limitBytes) {
        await channel.writeFrame(
          encodeJsonFrame(FrameType.fileWriteEnd, callId, { commit: false }),
        );
        throw new HearthError(
          'file_too_large',
          `The upload is over this server's limit of ${limitBytes} bytes; nothing was written.`,
        );
      }
      for (let offset = 0; offset < chunk.length; offset += UPLOAD_CHUNK_BYTES) {
        const piece = Buffer.from(
          chunk.buffer,
          chunk.byteOffset + offset,
          Math.min(UPLOAD_CHUNK_BYTES, chunk.length - offset),
        );
        await channel.writeFrame(encodeFrame(FrameType.fileData, callId, piece));
      }
    }
  } catch (error) {
    if (!(error instanceof HearthError && error.code === 'file_too_large')) {
      // The client went away mid-upload: drop the partial file.
      await channel.writeFrame(encodeJsonFrame(FrameType.fileWriteEnd, callId, { commit: false }));
    }
    channel.unregister(callId);
    throw error;
  }
  if (!failure) {
    await channel.writeFrame(encodeJsonFrame(FrameType.fileWriteEnd, callId, { commit: true }));
  }
  return done;
}

/**
 * Starts a download of the guest file at `path`. Resolves once the guest has opened it,
 * with its size and a stream of its bytes. The guest sends a chunk only against credit,
 * which the stream grants as its reader takes chunks. A slow reader therefore delays only
 * its own download, and a large file is never held in memory.
 */
export async function downloadFile(
  channel: FrameChannel,
  path: string,
): Promise<{ size: number; stream: Readable }> {
  const callId = channel.allocateCallId();
  let finished = false;
  // Chunks received whose credit has not been returned to the guest yet.
  let owed = 0;
  const grant = () => {
    if (finished || owed === 0) return;
    const chunks = owed;
    owed = 0;
    channel
      .writeFrame(encodeJsonFrame(FrameType.fileCredit, callId, { chunks }))
      .catch(() => undefined);
  };
  const stream = new Readable({
    highWaterMark: 1 << 20,
    read: grant,
    destroy(error, callback) {
      channel.unregister(callId);
      // A reader that leaves early, such as an HTTP client that disconnects, stops the
      // guest from reading and sending the rest of the file.
      if (!finished) {
        finished = true;
        channel.writeFrame(encodeFrame(FrameType.cancel, callId)).catch(() => undefined);
      }
      callback(error);
    },
  });

  return new Promise((resolve, reject) => {
    let started = false;
    channel.register(
      callId,
      (frame) => {
        if (frame.type === FrameType.fileMeta) {
          started = true;
          resolve({
            size: (JSON.parse(frame.payload.toString()) as { size: number }).size,
            stream,
          });
        } else if (frame.type === FrameType.fileData) {
          owed += 1;
          if (stream.push(Buffer.from(frame.payload))) grant();
        } else if (frame.type === FrameType.fileDone) {
          finished = true;
          channel.unregister(callId);
          stream.push(null);
        } else {
          finished = true;
          channel.unregister(callId);
          const error = agentError(frame);
          if (started) stream.destroy(error);
          else reject(error);
        }
      },
      (error) => (started ? stream.destroy(error) : reject(error)),
    );
    void channel.writeFrame(
      encodeJsonFrame(FrameType.fileRead, callId, {
        path,
        window_chunks: DOWNLOAD_WINDOW_CHUNKS,
      }),
    );
  });
}

export async function listFiles(channel: FrameChannel, path: string): Promise<FileListing> {
  const callId = channel.allocateCallId();
  return new Promise((resolve, reject) => {
    channel.register(
      callId,
      (frame) => {
        channel.unregister(callId);
        if (frame.type === FrameType.fileDone) resolve(JSON.parse(frame.payload.toString()));
        else reject(agentError(frame));
      },
      reject,
    );
    void channel.writeFrame(encodeJsonFrame(FrameType.fileList, callId, { path }));
  });
}

function agentError(frame: Frame): HearthError {
  if (frame.type !== FrameType.error) {
    return new HearthError('agent_error', `The agent sent an unexpected frame ${frame.type}.`);
  }
  const body = JSON.parse(frame.payload.toString()) as { code: string; message: string };
  return new HearthError(body.code, body.message);
}
