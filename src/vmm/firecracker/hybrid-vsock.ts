// Host-initiated connections to a guest vsock port through Firecracker's hybrid vsock: the
// host connects to the device's Unix socket (`uds_path`), sends `CONNECT <port>\n`, and reads
// `OK <host_port>\n`. Every byte after that line belongs to the guest's listener. Firecracker
// closes the Unix connection without an OK line while nothing in the guest listens on the port.
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

import { FirecrackerError } from './errors.js';

/** The OK line is about 10 bytes, so a longer line without a newline is not the handshake. */
const MAX_HANDSHAKE_LINE_BYTES = 64;

/** Pause between attempts while the guest boots. */
const RETRY_DELAY_MS = 20;

const OK_LINE = /^OK (\d+)$/;

export interface HybridVsockOptions {
  udsPath: string;
  /** The guest vsock port to connect to. */
  port: number;
  /** Time in ms to keep trying while the guest is not listening yet. */
  timeoutMs: number;
  /** Ends the retries early, e.g. when the Firecracker process exits. */
  signal?: AbortSignal;
}

export interface HybridVsockConnection {
  /** The byte stream to the guest listener, positioned after the OK line. */
  socket: Socket;
  /** The host-side port Firecracker assigned, from the OK line. */
  hostPort: number;
}

/** A failed attempt that the next attempt may fix, because the guest may not listen yet. */
class NotListeningYet extends Error {}

/**
 * Connects to `port` in the guest, retrying until the guest listens or `timeoutMs` passes.
 * Rejects with `firecracker_timeout` at the deadline and with `firecracker_vsock_error` when
 * the socket responds with anything other than an OK line.
 */
export async function connectHybridVsock(
  options: HybridVsockOptions,
): Promise<HybridVsockConnection> {
  const deadline = Date.now() + options.timeoutMs;
  let attempts = 0;
  let lastFailure = 'no attempt was made';

  while (Date.now() < deadline) {
    options.signal?.throwIfAborted();
    attempts += 1;
    try {
      return await attemptHandshake(options.udsPath, options.port, deadline - Date.now());
    } catch (error) {
      if (!(error instanceof NotListeningYet)) throw error;
      lastFailure = error.message;
    }
    await sleep(RETRY_DELAY_MS, undefined, { signal: options.signal });
  }

  throw new FirecrackerError(
    'firecracker_timeout',
    `The guest did not accept a vsock connection on port ${options.port} through ` +
      `${options.udsPath} within ${options.timeoutMs} ms (${attempts} attempts; last: ` +
      `${lastFailure}). Check that the guest agent starts and listens on that port.`,
  );
}

function attemptHandshake(
  udsPath: string,
  port: number,
  timeoutMs: number,
): Promise<HybridVsockConnection> {
  return new Promise((resolve, reject) => {
    const socket = connect(udsPath);
    let received = Buffer.alloc(0);
    let settled = false;

    const finish = (error: Error | null, connection?: HybridVsockConnection): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
      if (error) {
        socket.destroy();
        reject(error);
      } else if (connection) {
        resolve(connection);
      }
    };

    const timer = setTimeout(
      () => finish(new NotListeningYet(`no OK line within ${timeoutMs} ms`)),
      timeoutMs,
    );

    const onData = (chunk: Buffer): void => {
      received = Buffer.concat([received, chunk]);
      const newline = received.indexOf(0x0a);
      if (newline === -1) {
        if (received.length > MAX_HANDSHAKE_LINE_BYTES) {
          finish(
            new FirecrackerError(
              'firecracker_vsock_error',
              `${udsPath} sent ${received.length} bytes without a newline in answer to ` +
                `CONNECT ${port}; expected "OK <port>".`,
            ),
          );
        }
        return;
      }

      const line = received.subarray(0, newline).toString('latin1');
      const match = OK_LINE.exec(line);
      if (!match) {
        finish(
          new FirecrackerError(
            'firecracker_vsock_error',
            `${udsPath} answered CONNECT ${port} with ${JSON.stringify(line.slice(0, 40))}; ` +
              'expected "OK <port>".',
          ),
        );
        return;
      }

      // Bytes after the newline are the guest's: hand them back to the stream, unread.
      socket.pause();
      const rest = received.subarray(newline + 1);
      if (rest.length > 0) socket.unshift(rest);
      finish(null, { socket, hostPort: Number(match[1]) });
    };

    const onError = (error: NodeJS.ErrnoException): void => {
      finish(new NotListeningYet(`${error.code ?? error.message} on ${udsPath}`));
    };

    const onClose = (): void => {
      finish(new NotListeningYet(`${udsPath} closed the connection before an OK line`));
    };

    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.once('connect', () => socket.write(`CONNECT ${port}\n`));
  });
}
