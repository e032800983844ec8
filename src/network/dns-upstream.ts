// Sends a query to the upstream resolver over UDP or TCP and waits for its answer.
import { randomInt } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { readFile } from 'node:fs/promises';
import { connect, isIPv6 } from 'node:net';
import { parseIpv4 } from './ipv4.js';

export interface Upstream {
  address: string;
  port: number;
}

const DNS_PORT = 53;

/**
 * Parses "ADDRESS", "ADDRESS:PORT" or "[IPV6]:PORT". Throws an Error naming the text when
 * it is not an IP address: the upstream must not itself need a name lookup.
 */
export function parseUpstream(text: string): Upstream {
  const bracketed = /^\[([0-9a-fA-F:.]+)\](?::(\d+))?$/.exec(text);
  if (bracketed) return { address: bracketed[1]!, port: Number(bracketed[2] ?? DNS_PORT) };
  if (isIPv6(text)) return { address: text, port: DNS_PORT };
  const [address = '', port] = text.split(':');
  const portNumber = Number(port ?? DNS_PORT);
  if (parseIpv4(address) === null || !Number.isInteger(portNumber) || portNumber < 1) {
    throw new Error(
      `"${text}" is not a DNS upstream; give an IP address with an optional port, ` +
        'such as 192.0.2.53 or 192.0.2.53:5353.',
    );
  }
  return { address, port: portNumber };
}

/** Returns the first nameserver of resolv.conf text, or null when it lists none. */
export function parseResolvConf(text: string): string | null {
  for (const line of text.split('\n')) {
    const match = /^\s*nameserver\s+(\S+)/.exec(line);
    // A scoped IPv6 address (fe80::1%eth0) cannot be used from a plain socket here.
    if (match && !match[1]!.includes('%')) return match[1]!;
  }
  return null;
}

/** The host's resolver, as the guests' DNS proxy forwards to it by default. */
export async function hostResolver(path = '/etc/resolv.conf'): Promise<Upstream | null> {
  const text = await readFile(path, 'utf8').catch(() => '');
  const address = parseResolvConf(text);
  return address === null ? null : { address, port: DNS_PORT };
}

export class UpstreamTimeoutError extends Error {
  override name = 'UpstreamTimeoutError';
}

/**
 * Sends `query` from a fresh socket (a new random source port per query) under a new
 * random ID, and resolves with the first answer that comes from the upstream's address and
 * port and carries that ID. The answer keeps the new ID; the caller restores its own.
 */
export function queryUdp(upstream: Upstream, query: Buffer, timeoutMs: number): Promise<Buffer> {
  const id = randomInt(0x10000);
  const message = Buffer.from(query);
  message.writeUInt16BE(id, 0);
  const socket = createSocket(isIPv6(upstream.address) ? 'udp6' : 'udp4');
  return new Promise<Buffer>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new UpstreamTimeoutError(`no answer from ${upstream.address} in ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('message', (answer, sender) => {
      const fromUpstream = sender.address === upstream.address && sender.port === upstream.port;
      if (fromUpstream && answer.length >= 2 && answer.readUInt16BE(0) === id) {
        clearTimeout(timer);
        resolve(answer);
      }
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.send(message, upstream.port, upstream.address);
  }).finally(() => socket.close());
}

/** Sends `query` over TCP with its two-byte length prefix and reads one answer. */
export function queryTcp(upstream: Upstream, query: Buffer, timeoutMs: number): Promise<Buffer> {
  const id = randomInt(0x10000);
  const message = Buffer.from(query);
  message.writeUInt16BE(id, 0);
  const length = Buffer.alloc(2);
  length.writeUInt16BE(message.length);
  return new Promise<Buffer>((resolve, reject) => {
    const socket = connect({ host: upstream.address, port: upstream.port });
    let received = Buffer.alloc(0);
    socket.setTimeout(timeoutMs, () => {
      socket.destroy();
      reject(new UpstreamTimeoutError(`no answer from ${upstream.address} in ${timeoutMs} ms`));
    });
    socket.once('connect', () => socket.write(Buffer.concat([length, message])));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length < 2) return;
      const size = received.readUInt16BE(0);
      if (received.length < 2 + size) return;
      socket.destroy();
      const answer = received.subarray(2, 2 + size);
      if (answer.length >= 2 && answer.readUInt16BE(0) === id) resolve(answer);
      else reject(new Error(`answer from ${upstream.address} has the wrong ID`));
    });
    socket.once('error', reject);
    socket.once('close', () => reject(new Error(`${upstream.address} closed the connection`)));
  });
}
