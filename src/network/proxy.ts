// The transparent HTTP and TLS proxy of one VM. The nft rules redirect the guest's TCP
// connections to ports 80 and 443 of pinned addresses here. The proxy reads the Host header
// or the TLS SNI and checks two things: the name is allowed, and the original destination is
// an address the DNS proxy pinned for that very name. Only then does it connect to that
// destination and splice the two sockets. TLS is never terminated, so the proxy reads only
// the ClientHello.
//
// Why a redirect plus source NAT, rather than tproxy or SO_ORIGINAL_DST: both of those need
// socket options (IP_TRANSPARENT, getsockopt) that Node's net module does not expose, and a
// native addon would be the only way to reach them. Instead the nat input rule rewrites the
// redirected connection's source address to its original destination (`snat ip to ct
// original ip daddr`), so socket.remoteAddress is where the guest was connecting. The guest
// is known from the listener, because each VM has its own listeners on its own gateway.
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { normalizeDomainName } from './domains.js';
import { RateLimitedLog } from './rate-limited-log.js';
import { readHttpHost, readTlsServerName, type ServerNameResult } from './server-name.js';

export interface ServerNameProxyOptions {
  /** The VM's gateway address; the listeners bind ephemeral ports on it. */
  bindAddress: string;
  isAllowed(name: string): boolean;
  isPinned(name: string, address: string): boolean;
  /** Destinations never connected to (see denylist.ts). */
  isDenied(address: string): boolean;
  /** Called once per connection the policy refused. */
  onDenied(): void;
  logger: Logger;
  /** The destination ports connections are made to: 80 and 443 unless a test sets others. */
  upstreamPorts?: Record<Protocol, number>;
}

type Protocol = 'http' | 'tls';

// A client sends its request or ClientHello at once; 10 s covers a slow guest under TCG.
const FIRST_BYTES_TIMEOUT_MS = 10_000;
// A ClientHello with post-quantum key shares is under 2 KiB and HTTP servers commonly cap
// request headers at 8–16 KiB, so 32 KiB is ample for the name to appear.
const MAX_FIRST_BYTES = 32 * 1024;
const UPSTREAM_CONNECT_TIMEOUT_MS = 15_000;
// Time a refused HTTP client gets to read the 403 and close before its socket is destroyed.
const DENIED_CLOSE_GRACE_MS = 10_000;
// Each proxied connection uses two sockets in hearthd, so this caps what one VM can open.
const MAX_CONNECTIONS = 512;

export class ServerNameProxy {
  private readonly sockets = new Set<Socket>();
  private readonly denials: RateLimitedLog;
  private readonly upstreamPorts: Record<Protocol, number>;

  private constructor(
    private readonly options: ServerNameProxyOptions,
    private readonly servers: Record<Protocol, Server>,
    readonly httpPort: number,
    readonly tlsPort: number,
  ) {
    this.denials = new RateLimitedLog(options.logger);
    this.upstreamPorts = options.upstreamPorts ?? { http: 80, tls: 443 };
  }

  static async start(options: ServerNameProxyOptions): Promise<ServerNameProxy> {
    let proxy: ServerNameProxy | null = null;
    const handle = (protocol: Protocol) => (socket: Socket) =>
      proxy ? proxy.onConnection(socket, protocol) : socket.destroy();
    const servers = {
      http: createServer({ allowHalfOpen: true }, handle('http')),
      tls: createServer({ allowHalfOpen: true }, handle('tls')),
    };
    try {
      const httpPort = await listen(servers.http, options.bindAddress);
      const tlsPort = await listen(servers.tls, options.bindAddress);
      proxy = new ServerNameProxy(options, servers, httpPort, tlsPort);
      return proxy;
    } catch (error) {
      servers.http.close();
      servers.tls.close();
      throw error;
    }
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await Promise.all(
      Object.values(this.servers).map(
        (server) => new Promise<void>((resolve) => server.close(() => resolve())),
      ),
    );
  }

  private onConnection(client: Socket, protocol: Protocol): void {
    if (this.sockets.size >= MAX_CONNECTIONS * 2) {
      client.resetAndDestroy();
      return;
    }
    this.track(client);
    const destination = client.remoteAddress ?? '';
    let received = Buffer.alloc(0);
    let decided = false;
    const timer = setTimeout(() => {
      decided = true;
      this.deny(client, protocol, destination, 'no request');
    }, FIRST_BYTES_TIMEOUT_MS);
    const onData = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      let result: ServerNameResult;
      try {
        result = protocol === 'tls' ? readTlsServerName(received) : readHttpHost(received);
      } catch (error) {
        // The parsers are written not to throw; a guest must not end hearthd if one does.
        this.denials.warn({ err: error, protocol }, 'could not read the server name');
        result = { status: 'invalid', reason: 'the request could not be read' };
      }
      if (result.status === 'incomplete' && received.length < MAX_FIRST_BYTES) return;
      decided = true;
      clearTimeout(timer);
      client.off('data', onData);
      client.pause();
      if (result.status !== 'found') {
        const reason = result.status === 'invalid' ? result.reason : 'request too large';
        this.deny(client, protocol, destination, reason);
        return;
      }
      const refusal = this.check(result.name, destination);
      if (refusal) this.deny(client, protocol, destination, refusal);
      else this.splice(client, destination, this.upstreamPorts[protocol], received);
    };
    client.on('data', onData);
    // A client that closes before its request is done gets nothing; with allowHalfOpen the
    // socket would otherwise stay open.
    client.once('end', () => {
      if (decided) return;
      clearTimeout(timer);
      client.destroy();
    });
  }

  /** Returns why the connection is refused, or null when it may go ahead. */
  private check(rawName: string, destination: string): string | null {
    const name = normalizeDomainName(rawName);
    if (name === null) return 'the server name is not a domain name';
    if (!this.options.isAllowed(name)) return 'the server name is not allowed';
    if (!this.options.isPinned(name, destination)) {
      return 'the destination is not an address the DNS proxy gave for that name';
    }
    if (this.options.isDenied(destination)) return 'the destination is always denied';
    return null;
  }

  private deny(client: Socket, protocol: Protocol, destination: string, reason: string): void {
    this.options.onDenied();
    this.denials.info({ protocol, destination, reason }, 'egress connection denied');
    if (protocol === 'tls' || client.destroyed) {
      client.resetAndDestroy();
      return;
    }
    const body = `Forbidden by the sandbox's egress policy: ${reason}.\n`;
    // Reading on (and discarding) lets the client's FIN arrive, so the socket closes as a
    // whole. A client that never closes is cut off after a grace period.
    client.resume();
    client.end(
      'HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n' +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
    const grace = setTimeout(() => client.destroy(), DENIED_CLOSE_GRACE_MS);
    client.once('close', () => clearTimeout(grace));
  }

  private splice(client: Socket, host: string, port: number, firstBytes: Buffer): void {
    const upstream = connect({ host, port, allowHalfOpen: true });
    this.track(upstream);
    upstream.setTimeout(UPSTREAM_CONNECT_TIMEOUT_MS, () => {
      upstream.destroy();
      client.resetAndDestroy();
    });
    upstream.once('connect', () => {
      upstream.setTimeout(0);
      upstream.write(firstBytes);
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
    // Either side failing ends both, with a reset so that the guest gets an error.
    upstream.once('error', () => client.resetAndDestroy());
    client.once('error', () => upstream.destroy());
    upstream.once('close', () => {
      if (!client.writableEnded) client.destroy();
    });
    client.once('close', () => {
      if (!upstream.writableEnded) upstream.destroy();
    });
  }

  private track(socket: Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
  }
}

function listen(server: Server, address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, address, () => {
      server.off('error', reject);
      const bound = server.address();
      resolve(typeof bound === 'object' && bound ? bound.port : 0);
    });
  });
}
