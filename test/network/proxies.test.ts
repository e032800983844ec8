// The DNS proxy and the HTTP/TLS proxy on loopback, with fake upstreams, without nftables:
// what each one answers, pins, forwards and refuses.
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import {
  DnsClass,
  DnsType,
  encodeDnsMessage,
  Flags,
  parseDnsMessage,
  Rcode,
  rcodeOf,
  type DnsMessage,
} from '../../src/network/dns-message.js';
import { DnsProxy } from '../../src/network/dns-proxy.js';
import { matchesDomain, parseDomainPattern } from '../../src/network/domains.js';
import type { ResolvedAddress } from '../../src/network/pins.js';
import { ServerNameProxy } from '../../src/network/proxy.js';
import { captureClientHello } from '../helpers/tls-hello.js';

const logger = pino({ level: 'silent' });
const LOOPBACK = '127.0.0.1';
const allowed = [parseDomainPattern('allowed.test'), parseDomainPattern('*.wild.test')];
const isAllowed = (name: string) => matchesDomain(allowed, name);

const query = (id: number, name: string, type: number = DnsType.A): Buffer =>
  encodeDnsMessage({
    id,
    flags: Flags.RD,
    questions: [{ name, type, class: DnsClass.IN }],
    answers: [],
    authorities: [],
    additionals: [],
  });

/**
 * Starts a fake upstream resolver on UDP and TCP that replies to every A query with
 * 192.0.2.10 and records the names it received.
 */
async function startUpstream(): Promise<{ port: number; queries: string[]; close(): void }> {
  const queries: string[] = [];
  const answer = (bytes: Buffer): Buffer => {
    const message = parseDnsMessage(bytes);
    const question = message.questions[0]!;
    queries.push(question.name);
    const record = {
      name: question.name,
      type: DnsType.A,
      class: DnsClass.IN,
      ttl: 30,
      data: Buffer.alloc(0),
      value: '192.0.2.10',
    };
    return encodeDnsMessage({
      ...message,
      flags: Flags.QR | Flags.RD | Flags.RA,
      answers: question.type === DnsType.A ? [record] : [],
    });
  };
  const udp = createSocket('udp4');
  udp.on('message', (bytes, sender) => udp.send(answer(bytes), sender.port, sender.address));
  await new Promise<void>((resolve) => udp.bind(0, LOOPBACK, resolve));
  const tcp = createServer((socket) => {
    socket.once('data', (chunk: Buffer) => {
      const reply = answer(chunk.subarray(2));
      const length = Buffer.alloc(2);
      length.writeUInt16BE(reply.length);
      socket.end(Buffer.concat([length, reply]));
    });
  });
  await new Promise<void>((resolve) => tcp.listen(udp.address().port, LOOPBACK, resolve));
  return {
    port: udp.address().port,
    queries,
    close: () => {
      udp.close();
      tcp.close();
    },
  };
}

function askUdp(port: number, bytes: Buffer): Promise<DnsMessage> {
  const socket = createSocket('udp4');
  return new Promise<DnsMessage>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no DNS answer within 3 s')), 3000);
    socket.on('message', (answer) => {
      clearTimeout(timer);
      resolve(parseDnsMessage(answer));
    });
    socket.send(bytes, port, LOOPBACK);
  }).finally(() => socket.close());
}

function askTcp(port: number, bytes: Buffer): Promise<DnsMessage> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, LOOPBACK);
    const length = Buffer.alloc(2);
    length.writeUInt16BE(bytes.length);
    let received = Buffer.alloc(0);
    socket.on('connect', () => socket.write(Buffer.concat([length, bytes])));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length >= 2 && received.length >= 2 + received.readUInt16BE(0)) {
        socket.destroy();
        resolve(parseDnsMessage(received.subarray(2)));
      }
    });
    socket.on('error', reject);
  });
}

describe('DNS proxy', () => {
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let proxy: DnsProxy;
  const pinned: { name: string; addresses: ResolvedAddress[] }[] = [];
  let denied = 0;
  let pinResult = true;

  before(async () => {
    upstream = await startUpstream();
    proxy = await DnsProxy.start({
      bindAddress: LOOPBACK,
      port: 0,
      guestAddress: LOOPBACK,
      upstream: { address: LOOPBACK, port: upstream.port },
      isAllowed,
      pin: async (name, addresses) => {
        pinned.push({ name, addresses });
        return pinResult;
      },
      onDenied: () => (denied += 1),
      logger,
    });
  });

  after(async () => {
    await proxy?.close();
    upstream?.close();
  });

  it('forwards an allowed query and pins its answer first', async () => {
    const answer = await askUdp(proxy.port, query(0x4242, 'Allowed.TEST'));
    assert.equal(answer.id, 0x4242, 'the client gets its own ID back');
    assert.equal(rcodeOf(answer.flags), Rcode.NOERROR);
    assert.equal(answer.answers[0]?.value, '192.0.2.10');
    assert.deepEqual(pinned.at(-1), {
      name: 'allowed.test',
      addresses: [{ address: '192.0.2.10', ttlSeconds: 30 }],
    });
  });

  it('answers names outside the policy with NXDOMAIN, without asking upstream', async () => {
    const before = upstream.queries.length;
    const deniedBefore = denied;
    for (const name of ['other.test', 'wild.test', 'allowed.test.evil.test', 'allowed\\.test']) {
      const answer = await askUdp(proxy.port, query(1, name));
      assert.equal(rcodeOf(answer.flags), Rcode.NXDOMAIN, name);
    }
    assert.equal(upstream.queries.length, before);
    assert.equal(denied, deniedBefore + 4);
  });

  it('echoes a question whose name cannot be re-encoded', async () => {
    // One 63-byte label of 0xff bytes: escaped as text (\255 each), it is 252 characters.
    const header = Buffer.from([0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    const question = Buffer.concat([
      Buffer.from([63]),
      Buffer.alloc(63, 0xff),
      Buffer.from([0, 0, 1, 0, 1]),
    ]);
    const answer = await askUdp(proxy.port, Buffer.concat([header, question]));
    assert.equal(rcodeOf(answer.flags), Rcode.NXDOMAIN);
    assert.deepEqual(answer.questionBytes, question);
  });

  it('gives empty answers to AAAA and HTTPS queries', async () => {
    for (const type of [DnsType.AAAA, DnsType.HTTPS]) {
      const answer = await askUdp(proxy.port, query(2, 'a.wild.test', type));
      assert.equal(rcodeOf(answer.flags), Rcode.NOERROR);
      assert.equal(answer.answers.length, 0);
    }
  });

  it('answers over TCP too', async () => {
    const answer = await askTcp(proxy.port, query(3, 'b.wild.test'));
    assert.equal(answer.id, 3);
    assert.equal(answer.answers[0]?.value, '192.0.2.10');
  });

  it('fails the lookup when the answer cannot be pinned', async () => {
    pinResult = false;
    try {
      const answer = await askUdp(proxy.port, query(4, 'allowed.test'));
      assert.equal(rcodeOf(answer.flags), Rcode.SERVFAIL);
      assert.equal(answer.answers.length, 0);
    } finally {
      pinResult = true;
    }
  });

  it('rejects queries of another class or with two questions', async () => {
    const chaos = query(5, 'allowed.test');
    chaos.writeUInt16BE(3, chaos.length - 2);
    assert.equal(rcodeOf((await askUdp(proxy.port, chaos)).flags), Rcode.REFUSED);
    const two = encodeDnsMessage({
      ...parseDnsMessage(query(6, 'allowed.test')),
      questions: [
        { name: 'allowed.test', type: DnsType.A, class: DnsClass.IN },
        { name: 'other.test', type: DnsType.A, class: DnsClass.IN },
      ],
    });
    assert.equal(rcodeOf((await askUdp(proxy.port, two)).flags), Rcode.FORMERR);
  });
});

/** Starts a fake origin that records the first bytes it receives and replies "origin". */
function startOrigin(): Promise<{ server: Server; port: number; received: Buffer[] }> {
  const received: Buffer[] = [];
  const server = createServer((socket) => {
    socket.once('data', (chunk: Buffer) => {
      received.push(chunk);
      socket.end('origin');
    });
    socket.on('error', () => undefined);
  });
  return new Promise((resolve) =>
    server.listen(0, LOOPBACK, () =>
      resolve({ server, port: (server.address() as AddressInfo).port, received }),
    ),
  );
}

interface Exchange {
  reply: string;
  reset: boolean;
}

/** Sends bytes (then a FIN when `end` is set) and collects the reply until the close. */
function exchange(port: number, bytes: Buffer | string, end = false): Promise<Exchange> {
  return new Promise((resolve) => {
    const socket = connect(port, LOOPBACK);
    let reply = '';
    socket.on('connect', () => (end ? socket.end(bytes) : socket.write(bytes)));
    socket.on('data', (chunk) => (reply += chunk));
    socket.on('error', () => resolve({ reply, reset: true }));
    socket.on('close', () => resolve({ reply, reset: false }));
  });
}

describe('HTTP and TLS proxy', () => {
  let origin: Awaited<ReturnType<typeof startOrigin>>;
  let proxy: ServerNameProxy;
  let denied = 0;
  // In production the source of a redirected connection is its original destination; on
  // loopback it is 127.0.0.1, so that is the address pinned here.
  const pins = new Set(['allowed.test', 'a.wild.test']);

  before(async () => {
    origin = await startOrigin();
    proxy = await ServerNameProxy.start({
      bindAddress: LOOPBACK,
      isAllowed,
      isPinned: (name, address) => pins.has(name) && address === LOOPBACK,
      isDenied: () => false,
      onDenied: () => (denied += 1),
      logger,
      upstreamPorts: { http: origin.port, tls: origin.port },
    });
  });

  after(async () => {
    await proxy?.close();
    origin?.server.close();
  });

  it('splices an allowed HTTP request to its destination unchanged', async () => {
    const request = 'GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n';
    const result = await exchange(proxy.httpPort, request);
    assert.equal(result.reply, 'origin');
    assert.equal(origin.received.at(-1)?.toString(), request);
  });

  it('splices an allowed ClientHello to its destination unchanged', async () => {
    const hello = await captureClientHello('a.wild.test');
    const result = await exchange(proxy.tlsPort, hello);
    assert.equal(result.reply, 'origin');
    assert.deepEqual(origin.received.at(-1), hello);
  });

  it('answers 403 to HTTP for a name outside the policy', async () => {
    const before = denied;
    const result = await exchange(proxy.httpPort, 'GET / HTTP/1.1\r\nHost: other.test\r\n\r\n');
    assert.match(result.reply, /^HTTP\/1\.1 403 Forbidden\r\n/);
    assert.match(result.reply, /the server name is not allowed/);
    assert.equal(denied, before + 1);
  });

  it('answers 403 for an allowed name at an address not pinned for it', async () => {
    const result = await exchange(proxy.httpPort, 'GET / HTTP/1.1\r\nHost: b.wild.test\r\n\r\n');
    assert.match(result.reply, /not an address the DNS proxy gave for that name/);
  });

  it('resets a TLS connection whose SNI is not allowed', async () => {
    const received = origin.received.length;
    const result = await exchange(proxy.tlsPort, await captureClientHello('other.test'));
    assert.equal(result.reply, '');
    assert.ok(result.reset, 'the client sees a reset');
    assert.equal(origin.received.length, received, 'nothing reached the origin');
  });

  it('closes a connection that ends before its request', async () => {
    const before = denied;
    const result = await exchange(proxy.httpPort, 'GET / HTTP/1.1\r\nHost: allo', true);
    assert.equal(result.reply, '');
    assert.equal(denied, before, 'an abandoned request is not a denial');
  });

  it('refuses a TLS port connection that does not speak TLS', async () => {
    const result = await exchange(proxy.tlsPort, 'GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n');
    assert.ok(result.reset);
  });
});
