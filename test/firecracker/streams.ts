import type { Duplex } from 'node:stream';

/**
 * Reads exactly `size` bytes from `stream` and leaves any bytes after them unread. Rejects
 * when the stream ends first or `timeoutMs` passes.
 */
export function readExactly(stream: Duplex, size: number, timeoutMs = 5_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);

    const cleanup = () => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(
        new Error(`Read ${buffered.length} of ${size} bytes before the ${timeoutMs} ms timeout.`),
      );
    }, timeoutMs);
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length < size) return;
      cleanup();
      stream.pause();
      const rest = buffered.subarray(size);
      if (rest.length > 0) stream.unshift(rest);
      resolve(buffered.subarray(0, size));
    };
    const onEnd = () => {
      cleanup();
      reject(new Error(`The stream ended after ${buffered.length} of ${size} bytes.`));
    };

    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.resume();
  });
}
