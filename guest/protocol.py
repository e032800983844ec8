"""Frames of hearth's agent channel, shared by the agent and the Python kernel.

Every frame is a 9-byte header followed by its payload: an unsigned byte for the frame
type, then the call id and the payload length as big-endian unsigned 32-bit integers.
Control frames carry UTF-8 JSON and output frames carry raw bytes, so the channel is
binary-safe. The TypeScript side of this contract lives in src/agent/protocol.ts.
"""

import json
import struct

HEADER = struct.Struct(">BII")

# host -> guest
HELLO = 1
EXEC = 3
PING = 7
SHUTDOWN = 9
CANCEL = 11
FILE_WRITE_BEGIN = 20
FILE_DATA = 21
FILE_WRITE_END = 22
FILE_READ = 23
FILE_LIST = 24
FILE_CREDIT = 27

# guest -> host
READY = 2
STDOUT = 4
STDERR = 5
RESULT = 6
PONG = 8
ERROR = 10
FILE_DONE = 25
FILE_META = 26

# The largest payload one frame may carry: it bounds what either side buffers per frame,
# and leaves room for 1 MiB of code after JSON escaping.
MAX_PAYLOAD_BYTES = 16 << 20


def encode(frame_type, call_id, payload=b""):
    return HEADER.pack(frame_type, call_id, len(payload)) + payload


def encode_json(frame_type, call_id, value):
    return encode(frame_type, call_id, json.dumps(value, separators=(",", ":")).encode())
