// Reads the server name a client asks for from the first bytes of its connection: the SNI of
// a TLS ClientHello (RFC 8446 section 4.1.2, RFC 6066 section 3) or the Host header of an
// HTTP/1.x request (RFC 9112 section 3.2).

export type ServerNameResult =
  | { status: 'incomplete' }
  | { status: 'invalid'; reason: string }
  | { status: 'found'; name: string };

const INCOMPLETE: ServerNameResult = { status: 'incomplete' };
const TLS_HANDSHAKE_RECORD = 22;
const CLIENT_HELLO = 1;
const SERVER_NAME_EXTENSION = 0;
const HOST_NAME_TYPE = 0;

/** Reads the SNI host name from a ClientHello, which may span several TLS records. */
export function readTlsServerName(bytes: Buffer): ServerNameResult {
  const fragments: Buffer[] = [];
  let handshakeLength = 0;
  let offset = 0;
  while (offset + 5 <= bytes.length) {
    if (bytes[offset] !== TLS_HANDSHAKE_RECORD || bytes[offset + 1] !== 3) {
      return invalid('the connection did not start with a TLS handshake');
    }
    const recordLength = bytes.readUInt16BE(offset + 3);
    if (offset + 5 + recordLength > bytes.length) break;
    fragments.push(bytes.subarray(offset + 5, offset + 5 + recordLength));
    handshakeLength += recordLength;
    offset += 5 + recordLength;
  }
  if (offset === 0 && bytes.length >= 2 && (bytes[0] !== 22 || bytes[1] !== 3)) {
    return invalid('the connection did not start with a TLS handshake');
  }
  const handshake = Buffer.concat(fragments, handshakeLength);
  if (handshake.length < 4) return INCOMPLETE;
  if (handshake[0] !== CLIENT_HELLO)
    return invalid('the first handshake message is not a ClientHello');
  const bodyLength = handshake.readUIntBE(1, 3);
  if (handshake.length < 4 + bodyLength) return INCOMPLETE;
  try {
    return parseClientHello(handshake.subarray(4, 4 + bodyLength));
  } catch {
    return invalid('the ClientHello is malformed');
  }
}

function parseClientHello(body: Buffer): ServerNameResult {
  // legacy_version (2), random (32), then three length-prefixed vectors.
  let offset = 2 + 32;
  offset += 1 + readLength(body, offset, 1);
  offset += 2 + readLength(body, offset, 2);
  offset += 1 + readLength(body, offset, 1);
  if (offset === body.length) return invalid('the ClientHello has no extensions, so no SNI');
  const extensionsEnd = offset + 2 + readLength(body, offset, 2);
  offset += 2;
  while (offset + 4 <= extensionsEnd) {
    const type = body.readUInt16BE(offset);
    const length = body.readUInt16BE(offset + 2);
    const data = slice(body, offset + 4, length);
    if (type === SERVER_NAME_EXTENSION) return parseServerNameList(data);
    offset += 4 + length;
  }
  return invalid('the ClientHello carries no SNI');
}

function parseServerNameList(data: Buffer): ServerNameResult {
  const listEnd = 2 + readLength(data, 0, 2);
  let offset = 2;
  while (offset + 3 <= listEnd) {
    const type = data[offset];
    const length = data.readUInt16BE(offset + 1);
    const name = slice(data, offset + 3, length);
    if (type === HOST_NAME_TYPE) return { status: 'found', name: name.toString('latin1') };
    offset += 3 + length;
  }
  return invalid('the SNI extension has no host name');
}

function readLength(buffer: Buffer, offset: number, size: 1 | 2): number {
  if (offset + size > buffer.length) throw new RangeError('vector length past the end');
  return size === 1 ? buffer[offset]! : buffer.readUInt16BE(offset);
}

function slice(buffer: Buffer, offset: number, length: number): Buffer {
  if (offset + length > buffer.length) throw new RangeError('field past the end');
  return buffer.subarray(offset, offset + length);
}

const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP\/1\.[01]$/;

/**
 * Reads the host name of an HTTP/1.x request from its header block. Rejects what a proxy
 * and the origin server could read differently: several Host headers, folded header lines,
 * and an absolute-form target that names another host than the Host header.
 */
export function readHttpHost(bytes: Buffer): ServerNameResult {
  const end = bytes.indexOf('\r\n\r\n');
  if (end === -1) {
    const firstLineEnd = bytes.indexOf('\r\n');
    const firstLine = bytes.subarray(0, firstLineEnd === -1 ? bytes.length : firstLineEnd);
    if (/[^\x20-\x7e]/.test(firstLine.toString('latin1'))) {
      return invalid('the connection did not start with an HTTP request');
    }
    return INCOMPLETE;
  }
  const [requestLine = '', ...headerLines] = bytes
    .subarray(0, end)
    .toString('latin1')
    .split('\r\n');
  const request = REQUEST_LINE.exec(requestLine);
  if (!request) return invalid('the connection did not start with an HTTP/1.x request');
  if (request[1] === 'CONNECT') return invalid('CONNECT requests are not forwarded');

  const hosts: string[] = [];
  for (const line of headerLines) {
    if (/^[ \t]/.test(line)) return invalid('folded header lines are not accepted');
    const colon = line.indexOf(':');
    if (colon <= 0) return invalid('a header line has no name');
    if (line.slice(0, colon).toLowerCase() === 'host') hosts.push(line.slice(colon + 1).trim());
  }
  if (hosts.length !== 1) return invalid('the request must have exactly one Host header');
  const host = stripPort(hosts[0]!);

  const target = request[2]!;
  if (!target.startsWith('/') && target !== '*') {
    const absolute = /^https?:\/\/([^/?#]+)/i.exec(target);
    if (!absolute || stripPort(absolute[1]!).toLowerCase() !== host.toLowerCase()) {
      return invalid('the request target names another host than the Host header');
    }
  }
  return { status: 'found', name: host };
}

/** Drops a trailing :port; an IPv6 literal ([...]) and anything else stay as they are. */
function stripPort(authority: string): string {
  if (authority.startsWith('[')) return authority;
  const colon = authority.lastIndexOf(':');
  return colon === -1 ? authority : authority.slice(0, colon);
}

function invalid(reason: string): ServerNameResult {
  return { status: 'invalid', reason };
}
