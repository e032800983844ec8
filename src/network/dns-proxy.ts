// One VM's resolver. It listens on the VM's gateway address, port 53 (UDP and TCP), and
// resolves only names the policy allows, by forwarding them to the upstream resolver. The
// addresses of each answer are pinned before the guest receives it, so that a connection
// made right after the lookup already finds its address allowed.
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import {
  DnsClass,
  DnsType,
  emptyResponse,
  Flags,
  opcodeOf,
  parseDnsMessage,
  Rcode,
  rcodeOf,
  withId,
  type DnsMessage,
} from './dns-message.js';
import { queryTcp, queryUdp, type Upstream } from './dns-upstream.js';
import { normalizeDomainName } from './domains.js';
import type { ResolvedAddress } from './pins.js';
import { RateLimitedLog } from './rate-limited-log.js';

export interface DnsProxyOptions {
  /** The VM's gateway address; the proxy binds `port` on it. */
  bindAddress: string;
  /** 53 unless a test sets another (0 picks a free one). */
  port?: number;
  /** Queries from any other source are ignored. */
  guestAddress: string;
  upstream: Upstream;
  isAllowed(name: string): boolean;
  /** Pins the addresses of an answer; resolves false when they cannot be pinned. */
  pin(name: string, addresses: ResolvedAddress[]): Promise<boolean>;
  /** Called once per query the policy refused. */
  onDenied(): void;
  logger: Logger;
}

const DNS_PORT = 53;
// A resolver replies in milliseconds, and glibc in the guest waits 5 s before retrying.
const UPSTREAM_TIMEOUT_MS = 4_000;
// Queries of one VM waiting for the upstream; more are dropped, as an overloaded resolver
// would drop them, and the guest retries.
const MAX_IN_FLIGHT_QUERIES = 64;
// RFC 7766 lets a client keep a TCP connection open; an idle one is closed after this.
const TCP_IDLE_TIMEOUT_MS = 10_000;
const MAX_TCP_CONNECTIONS = 16;
// CNAME chains longer than this are not followed when looking for the answer's addresses.
const MAX_CNAME_CHAIN = 16;
// Query types whose answers would give the guest addresses the proxy does not pin: IPv6,
// or address hints in SVCB/HTTPS records. They get an empty answer.
const UNPINNED_TYPES: ReadonlySet<number> = new Set([
  DnsType.AAAA,
  DnsType.SVCB,
  DnsType.HTTPS,
  DnsType.ANY,
]);

export class DnsProxy {
  private inFlight = 0;
  private readonly connections = new Set<Socket>();
  private readonly warnings: RateLimitedLog;

  private constructor(
    private readonly options: DnsProxyOptions,
    private readonly udp: UdpSocket,
    private readonly tcp: Server,
  ) {
    this.warnings = new RateLimitedLog(options.logger);
  }

  static async start(options: DnsProxyOptions): Promise<DnsProxy> {
    const udp = createSocket('udp4');
    const tcp = createServer();
    const proxy = new DnsProxy(options, udp, tcp);
    udp.on(
      'message',
      (message, sender) => void proxy.onDatagram(message, sender.address, sender.port),
    );
    udp.on('error', (error) => proxy.warnings.warn({ err: error }, 'DNS proxy UDP socket error'));
    tcp.on('connection', (socket) => proxy.onConnection(socket));
    tcp.on('error', (error) => proxy.warnings.warn({ err: error }, 'DNS proxy TCP server error'));
    try {
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(options.port ?? DNS_PORT, options.bindAddress, () => {
          udp.off('error', reject);
          resolve();
        });
      });
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(udp.address().port, options.bindAddress, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
    } catch (error) {
      await proxy.close();
      throw error;
    }
    return proxy;
  }

  /** The UDP and TCP port the proxy listens on. */
  get port(): number {
    return this.udp.address().port;
  }

  async close(): Promise<void> {
    for (const socket of this.connections) socket.destroy();
    await new Promise<void>((resolve) => {
      try {
        this.udp.close(() => resolve());
      } catch {
        resolve();
      }
    });
    await new Promise<void>((resolve) => this.tcp.close(() => resolve()));
  }

  private async onDatagram(message: Buffer, address: string, port: number): Promise<void> {
    if (address !== this.options.guestAddress) return;
    if (this.inFlight >= MAX_IN_FLIGHT_QUERIES) return;
    this.inFlight += 1;
    try {
      const answer = await this.respond(message, 'udp');
      if (answer) this.udp.send(answer, port, address);
    } catch (error) {
      // The socket closed while the upstream was asked: the VM is being detached.
      this.warnings.warn({ err: error }, 'could not send a DNS answer');
    } finally {
      this.inFlight -= 1;
    }
  }

  private onConnection(socket: Socket): void {
    if (
      socket.remoteAddress !== this.options.guestAddress ||
      this.connections.size >= MAX_TCP_CONNECTIONS
    ) {
      socket.destroy();
      return;
    }
    this.connections.add(socket);
    socket.once('close', () => this.connections.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.setTimeout(TCP_IDLE_TIMEOUT_MS, () => socket.destroy());
    let pending = Buffer.alloc(0);
    let queue = Promise.resolve();
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
        const query = pending.subarray(2, 2 + pending.readUInt16BE(0));
        pending = pending.subarray(2 + query.length);
        // Answers go back in query order, one at a time per connection.
        queue = queue.then(async () => {
          const answer = await this.respond(Buffer.from(query), 'tcp');
          if (!answer || socket.destroyed) return;
          const length = Buffer.alloc(2);
          length.writeUInt16BE(answer.length);
          socket.write(Buffer.concat([length, answer]));
        });
      }
    });
  }

  /**
   * Returns the bytes to send back, or null to send nothing. A guest sends arbitrary bytes,
   * so any error is caught here, logged and answered with nothing rather than left to end
   * hearthd.
   */
  private async respond(bytes: Buffer, transport: 'udp' | 'tcp'): Promise<Buffer | null> {
    try {
      return await this.answer(bytes, transport);
    } catch (error) {
      this.warnings.warn({ err: error }, 'could not answer a DNS query');
      return null;
    }
  }

  private async answer(bytes: Buffer, transport: 'udp' | 'tcp'): Promise<Buffer | null> {
    let query: DnsMessage;
    try {
      query = parseDnsMessage(bytes);
    } catch {
      return bytes.length >= 12 ? formatError(bytes) : null;
    }
    if (query.flags & Flags.QR) return null;
    if (opcodeOf(query.flags) !== 0) return emptyResponse(query, Rcode.NOTIMP);
    const question = query.questions[0];
    if (!question || query.questions.length !== 1) return emptyResponse(query, Rcode.FORMERR);
    if (question.class !== DnsClass.IN) return emptyResponse(query, Rcode.REFUSED);

    const name = normalizeDomainName(question.name);
    if (name === null || !/^[\x21-\x7e]+$/.test(question.name) || !this.options.isAllowed(name)) {
      this.options.onDenied();
      return emptyResponse(query, Rcode.NXDOMAIN);
    }
    if (UNPINNED_TYPES.has(question.type)) return emptyResponse(query, Rcode.NOERROR);

    let response: Buffer;
    let parsed: DnsMessage;
    try {
      const ask = transport === 'udp' ? queryUdp : queryTcp;
      response = await ask(this.options.upstream, bytes, UPSTREAM_TIMEOUT_MS);
      parsed = parseDnsMessage(response);
    } catch (error) {
      this.warnings.warn({ err: error }, 'DNS upstream query failed');
      return emptyResponse(query, Rcode.SERVFAIL);
    }
    const echoed = parsed.questions[0];
    if (
      !(parsed.flags & Flags.QR) ||
      parsed.questions.length !== 1 ||
      echoed?.name.toLowerCase() !== question.name.toLowerCase() ||
      echoed.type !== question.type
    ) {
      this.warnings.warn({}, 'DNS upstream answer does not match its query');
      return emptyResponse(query, Rcode.SERVFAIL);
    }
    if (rcodeOf(parsed.flags) === Rcode.NOERROR) {
      const addresses = chainAddresses(parsed, name);
      if (addresses.length > 0 && !(await this.options.pin(name, addresses))) {
        return emptyResponse(query, Rcode.SERVFAIL);
      }
    }
    return withId(response, query.id);
  }
}

/**
 * Returns the A records of an answer that belong to `name`, directly or through the
 * answer's CNAME chain. A records for other names (glue, unrelated data) are ignored.
 */
export function chainAddresses(answer: DnsMessage, name: string): ResolvedAddress[] {
  const owners = new Set([name]);
  for (let step = 0; step < MAX_CNAME_CHAIN; step++) {
    const before = owners.size;
    for (const record of answer.answers) {
      if (record.type === DnsType.CNAME && record.value && owners.has(record.name.toLowerCase())) {
        owners.add(record.value.toLowerCase());
      }
    }
    if (owners.size === before) break;
  }
  return answer.answers
    .filter(
      (record) =>
        record.type === DnsType.A &&
        record.value !== undefined &&
        owners.has(record.name.toLowerCase()),
    )
    .map((record) => ({ address: record.value!, ttlSeconds: record.ttl }));
}

/** Builds a FORMERR answer for a message whose header was read but the rest was not. */
function formatError(bytes: Buffer): Buffer | null {
  const flags = bytes.readUInt16BE(2);
  if (flags & Flags.QR) return null;
  const header = Buffer.alloc(12);
  header.writeUInt16BE(bytes.readUInt16BE(0), 0);
  header.writeUInt16BE(Flags.QR | (flags & 0x7800) | Flags.RA | Rcode.FORMERR, 2);
  return header;
}
