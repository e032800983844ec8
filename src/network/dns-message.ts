// DNS messages (RFC 1035 section 4): enough to read a query, read the records of an answer
// and build the small answers hearth sends itself.

export const DnsType = {
  A: 1,
  CNAME: 5,
  AAAA: 28,
  OPT: 41,
  SVCB: 64,
  HTTPS: 65,
  ANY: 255,
} as const;

export const DnsClass = { IN: 1 } as const;

export const Rcode = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
} as const;

export interface DnsQuestion {
  /** Labels joined by dots, without the root; "." and "\" inside a label are escaped. */
  name: string;
  type: number;
  class: number;
}

export interface DnsRecord {
  name: string;
  type: number;
  class: number;
  /** Seconds. */
  ttl: number;
  /** The raw RDATA; ignored when encoding an A or CNAME record that has a value. */
  data: Buffer;
  /** The dotted-quad address of an A record, or the target name of a CNAME. */
  value?: string;
}

export interface DnsMessage {
  id: number;
  /** The 16 flag bits of the header: QR, opcode, AA, TC, RD, RA, Z, RCODE. */
  flags: number;
  questions: DnsQuestion[];
  /**
   * The question section as received, set by parseDnsMessage. Responses echo these bytes,
   * because a name with escaped bytes may not encode back (an escaped label can exceed 63
   * characters).
   */
  questionBytes?: Buffer;
  answers: DnsRecord[];
  authorities: DnsRecord[];
  additionals: DnsRecord[];
}

export const Flags = {
  QR: 0x8000,
  AA: 0x0400,
  TC: 0x0200,
  RD: 0x0100,
  RA: 0x0080,
} as const;

export function opcodeOf(flags: number): number {
  return (flags >>> 11) & 0xf;
}

export function rcodeOf(flags: number): number {
  return flags & 0xf;
}

export class DnsFormatError extends Error {
  override name = 'DnsFormatError';
}

const HEADER_BYTES = 12;
// A name has at most 127 labels; more pointer jumps than that can only be a loop.
const MAX_POINTER_JUMPS = 128;
const MAX_NAME_OCTETS = 255;

/** Parses a whole message. Throws DnsFormatError for a truncated or malformed one. */
export function parseDnsMessage(buffer: Buffer): DnsMessage {
  if (buffer.length < HEADER_BYTES) throw new DnsFormatError('message shorter than a header');
  const counts = [4, 6, 8, 10].map((offset) => buffer.readUInt16BE(offset));
  const reader = { buffer, offset: HEADER_BYTES };
  const questions: DnsQuestion[] = [];
  for (let i = 0; i < counts[0]!; i++) {
    const name = readName(reader);
    need(reader, 4);
    questions.push({
      name,
      type: buffer.readUInt16BE(reader.offset),
      class: buffer.readUInt16BE(reader.offset + 2),
    });
    reader.offset += 4;
  }
  const questionBytes = Buffer.from(buffer.subarray(HEADER_BYTES, reader.offset));
  const sections = counts.slice(1).map((count) => {
    const records: DnsRecord[] = [];
    for (let i = 0; i < count; i++) records.push(readRecord(reader));
    return records;
  });
  return {
    id: buffer.readUInt16BE(0),
    flags: buffer.readUInt16BE(2),
    questions,
    questionBytes,
    answers: sections[0]!,
    authorities: sections[1]!,
    additionals: sections[2]!,
  };
}

/** Encodes a message without name compression. */
export function encodeDnsMessage(message: DnsMessage): Buffer {
  const parts: Buffer[] = [];
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt16BE(message.id, 0);
  header.writeUInt16BE(message.flags, 2);
  header.writeUInt16BE(message.questions.length, 4);
  header.writeUInt16BE(message.answers.length, 6);
  header.writeUInt16BE(message.authorities.length, 8);
  header.writeUInt16BE(message.additionals.length, 10);
  parts.push(header);
  for (const question of message.questions) {
    const fixed = Buffer.alloc(4);
    fixed.writeUInt16BE(question.type, 0);
    fixed.writeUInt16BE(question.class, 2);
    parts.push(encodeName(question.name), fixed);
  }
  for (const record of [...message.answers, ...message.authorities, ...message.additionals]) {
    const data = encodeRdata(record);
    const fixed = Buffer.alloc(10);
    fixed.writeUInt16BE(record.type, 0);
    fixed.writeUInt16BE(record.class, 2);
    fixed.writeUInt32BE(record.ttl, 4);
    fixed.writeUInt16BE(data.length, 8);
    parts.push(encodeName(record.name), fixed, data);
  }
  return Buffer.concat(parts);
}

/**
 * Builds a response to `query` with no records: the question echoed, RD copied, RA set and
 * the given RCODE. With NOERROR it is a "no data" answer.
 */
export function emptyResponse(query: DnsMessage, rcode: number): Buffer {
  const opcode = opcodeOf(query.flags) << 11;
  const header = encodeDnsMessage({
    id: query.id,
    flags: Flags.QR | opcode | (query.flags & Flags.RD) | Flags.RA | rcode,
    questions: query.questionBytes ? [] : query.questions,
    answers: [],
    authorities: [],
    additionals: [],
  });
  if (!query.questionBytes) return header;
  header.writeUInt16BE(query.questions.length, 4);
  return Buffer.concat([header, query.questionBytes]);
}

/** Returns a copy of a message's bytes with another ID. */
export function withId(message: Buffer, id: number): Buffer {
  const copy = Buffer.from(message);
  copy.writeUInt16BE(id, 0);
  return copy;
}

interface Reader {
  buffer: Buffer;
  offset: number;
}

function need(reader: Reader, bytes: number): void {
  if (reader.offset + bytes > reader.buffer.length) {
    throw new DnsFormatError('message ends in the middle of a field');
  }
}

function readRecord(reader: Reader): DnsRecord {
  const name = readName(reader);
  need(reader, 10);
  const { buffer } = reader;
  const type = buffer.readUInt16BE(reader.offset);
  const recordClass = buffer.readUInt16BE(reader.offset + 2);
  // RFC 2181 section 8: a TTL with the top bit set is read as zero.
  const rawTtl = buffer.readUInt32BE(reader.offset + 4);
  const ttl = rawTtl > 0x7fffffff ? 0 : rawTtl;
  const length = buffer.readUInt16BE(reader.offset + 8);
  reader.offset += 10;
  need(reader, length);
  const dataStart = reader.offset;
  const data = Buffer.from(buffer.subarray(dataStart, dataStart + length));
  let value: string | undefined;
  if (type === DnsType.A && recordClass === DnsClass.IN && length === 4) {
    value = [...data].join('.');
  } else if (type === DnsType.CNAME) {
    value = readName({ buffer, offset: dataStart });
  }
  reader.offset = dataStart + length;
  return { name, type, class: recordClass, ttl, data, value };
}

/** Reads a possibly compressed name and leaves the offset after its first occurrence. */
function readName(reader: Reader): string {
  const { buffer } = reader;
  const labels: string[] = [];
  let offset = reader.offset;
  let resumeAt: number | null = null;
  let octets = 0;
  for (let jumps = 0; ;) {
    if (offset >= buffer.length) throw new DnsFormatError('name runs past the message');
    const length = buffer[offset]!;
    if ((length & 0xc0) === 0xc0) {
      if (offset + 1 >= buffer.length) throw new DnsFormatError('truncated name pointer');
      if (++jumps > MAX_POINTER_JUMPS) throw new DnsFormatError('name pointer loop');
      resumeAt ??= offset + 2;
      offset = ((length & 0x3f) << 8) | buffer[offset + 1]!;
      continue;
    }
    if ((length & 0xc0) !== 0) throw new DnsFormatError('unknown label type');
    if (length === 0) {
      offset += 1;
      break;
    }
    octets += length + 1;
    if (octets > MAX_NAME_OCTETS || offset + 1 + length > buffer.length) {
      throw new DnsFormatError('name too long');
    }
    labels.push(escapeLabel(buffer.subarray(offset + 1, offset + 1 + length)));
    offset += 1 + length;
  }
  reader.offset = resumeAt ?? offset;
  return labels.join('.');
}

/** Escapes bytes that would make a label ambiguous as text, as zone files do: \. \\ \DDD. */
function escapeLabel(bytes: Buffer): string {
  let text = '';
  for (const byte of bytes) {
    if (byte === 0x2e || byte === 0x5c) text += `\\${String.fromCharCode(byte)}`;
    else if (byte < 0x21 || byte > 0x7e) text += `\\${String(byte).padStart(3, '0')}`;
    else text += String.fromCharCode(byte);
  }
  return text;
}

/** Encodes a name made of plain labels; escaped names are not needed by hearth's answers. */
function encodeName(name: string): Buffer {
  const parts: Buffer[] = [];
  for (const label of name === '' ? [] : name.split('.')) {
    const bytes = Buffer.from(label, 'latin1');
    if (bytes.length === 0 || bytes.length > 63) {
      throw new DnsFormatError(`cannot encode label "${label}"`);
    }
    parts.push(Buffer.from([bytes.length]), bytes);
  }
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

function encodeRdata(record: DnsRecord): Buffer {
  if (record.value !== undefined && record.type === DnsType.A) {
    return Buffer.from(record.value.split('.').map(Number));
  }
  if (record.value !== undefined && record.type === DnsType.CNAME) {
    return encodeName(record.value);
  }
  return record.data;
}
