// The host side of the agent channel's framing; guest/protocol.py is the guest side.
// A frame is a 9-byte header (type: u8, call id: u32 BE, payload length: u32 BE) and then
// the payload: UTF-8 JSON for control frames, raw bytes for output.

export const HEADER_BYTES = 9;
/**
 * The largest payload either side sends in one frame; a bigger header means corruption. A
 * call's JSON frame holds up to 1 MiB of code, which JSON escaping can grow six-fold, plus
 * its env, so the limit leaves room for both.
 */
export const MAX_PAYLOAD_BYTES = 16 << 20;

export const FrameType = {
  hello: 1,
  ready: 2,
  exec: 3,
  stdout: 4,
  stderr: 5,
  result: 6,
  ping: 7,
  pong: 8,
  shutdown: 9,
  error: 10,
  cancel: 11,
  fileWriteBegin: 20,
  fileData: 21,
  fileWriteEnd: 22,
  fileRead: 23,
  fileList: 24,
  fileDone: 25,
  fileMeta: 26,
  fileCredit: 27,
} as const;

export interface Frame {
  type: number;
  callId: number;
  payload: Buffer;
}

export function encodeFrame(type: number, callId: number, payload: Buffer = Buffer.alloc(0)) {
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt8(type, 0);
  header.writeUInt32BE(callId, 1);
  header.writeUInt32BE(payload.length, 5);
  return Buffer.concat([header, payload]);
}

export function encodeJsonFrame(type: number, callId: number, value: unknown): Buffer {
  return encodeFrame(type, callId, Buffer.from(JSON.stringify(value)));
}

/** Splits a byte stream into frames, however the stream happens to be chunked. */
export class FrameDecoder {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  push(chunk: Buffer): Frame[] {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    const frames: Frame[] = [];
    while (this.pendingBytes >= HEADER_BYTES) {
      const buffer = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
      this.pending = [buffer];
      const length = buffer.readUInt32BE(5);
      if (length > MAX_PAYLOAD_BYTES) {
        throw new Error(`agent sent a frame of ${length} bytes, over the protocol maximum`);
      }
      if (buffer.length < HEADER_BYTES + length) break;
      frames.push({
        type: buffer.readUInt8(0),
        callId: buffer.readUInt32BE(1),
        payload: buffer.subarray(HEADER_BYTES, HEADER_BYTES + length),
      });
      const rest = buffer.subarray(HEADER_BYTES + length);
      this.pending = rest.length ? [rest] : [];
      this.pendingBytes = rest.length;
    }
    return frames;
  }
}
