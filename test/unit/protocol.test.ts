import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  FrameDecoder,
  FrameType,
  MAX_PAYLOAD_BYTES,
  encodeFrame,
  encodeJsonFrame,
} from '../../src/agent/protocol.js';

describe('agent frame decoder', () => {
  it('decodes frames split at every byte', () => {
    const wire = Buffer.concat([
      encodeFrame(FrameType.stdout, 7, Buffer.from([0xe2, 0x82, 0xac])),
      encodeJsonFrame(FrameType.result, 7, { status: 'ok' }),
    ]);
    const decoder = new FrameDecoder();
    const frames = [];
    for (const byte of wire) frames.push(...decoder.push(Buffer.from([byte])));
    assert.equal(frames.length, 2);
    assert.equal(frames[0]!.type, FrameType.stdout);
    assert.equal(frames[0]!.callId, 7);
    assert.deepEqual(frames[0]!.payload, Buffer.from('€'));
    assert.deepEqual(JSON.parse(frames[1]!.payload.toString()), { status: 'ok' });
  });

  it('decodes several frames from one chunk', () => {
    const wire = Buffer.concat([
      encodeFrame(FrameType.pong, 1),
      encodeFrame(FrameType.pong, 2, Buffer.from('x')),
      encodeFrame(FrameType.pong, 3).subarray(0, 4),
    ]);
    const frames = new FrameDecoder().push(wire);
    assert.deepEqual(
      frames.map((frame) => frame.callId),
      [1, 2],
    );
  });

  it('rejects a header announcing an oversized payload', () => {
    const header = Buffer.alloc(9);
    header.writeUInt8(FrameType.stdout, 0);
    header.writeUInt32BE(MAX_PAYLOAD_BYTES + 1, 5);
    assert.throws(() => new FrameDecoder().push(header), /over the protocol maximum/);
  });
});
