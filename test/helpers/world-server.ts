// The servers of the egress tests' "world", run inside a test network namespace:
//   node world-server.js CONFIG.json
// and prints "ready" once every server listens. Each server reports which address served
// the request and the Host it saw, so that a test can tell where a connection landed.
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createHash } from 'node:crypto';
import {
  DnsClass,
  DnsType,
  emptyResponse,
  encodeDnsMessage,
  Flags,
  parseDnsMessage,
  Rcode,
} from '../../src/network/dns-message.js';
import { buildWheel } from './wheel.js';

export type WorldRole =
  | { kind: 'http'; address: string; port: number }
  | { kind: 'https'; address: string; port: number; certPath: string; keyPath: string }
  /** Names map to IPv4 addresses, and "*.zone" covers every name below zone. */
  | { kind: 'dns'; address: string; port: number; records: Record<string, string> }
  /** A PEP 503 simple index serving one wheel of WORLD_PACKAGE. */
  | { kind: 'index'; address: string; port: number };

export const WORLD_PACKAGE = { name: 'hearthdemo', version: '1.0', value: 'from the world index' };

function describeRequest(address: string) {
  return (request: IncomingMessage, response: ServerResponse) => {
    response.setHeader('Content-Type', 'text/plain');
    response.end(`served-by=${address} host=${request.headers.host ?? ''}\n`);
  };
}

function serveIndex(request: IncomingMessage, response: ServerResponse): void {
  const wheel = buildWheel(
    WORLD_PACKAGE.name,
    WORLD_PACKAGE.version,
    `VALUE = ${JSON.stringify(WORLD_PACKAGE.value)}\n`,
  );
  const digest = createHash('sha256').update(wheel.contents).digest('hex');
  const html = (body: string) => {
    response.setHeader('Content-Type', 'text/html');
    response.end(`<!DOCTYPE html><html><body>${body}</body></html>`);
  };
  const path = (request.url ?? '/').split('?')[0];
  if (path === '/simple/') {
    html(`<a href="${WORLD_PACKAGE.name}/">${WORLD_PACKAGE.name}</a>`);
  } else if (path === `/simple/${WORLD_PACKAGE.name}/`) {
    html(`<a href="/packages/${wheel.fileName}#sha256=${digest}">${wheel.fileName}</a>`);
  } else if (path === `/packages/${wheel.fileName}`) {
    response.setHeader('Content-Type', 'application/octet-stream');
    response.end(wheel.contents);
  } else {
    response.statusCode = 404;
    response.end('not found\n');
  }
}

function answerDns(records: Record<string, string>, bytes: Buffer): Buffer | null {
  let query;
  try {
    query = parseDnsMessage(bytes);
  } catch {
    return null;
  }
  const question = query.questions[0];
  if (!question) return null;
  const name = question.name.toLowerCase();
  const wildcard = Object.keys(records).find(
    (key) => key.startsWith('*.') && name.endsWith(key.slice(1)),
  );
  const address = records[name] ?? (wildcard ? records[wildcard] : undefined);
  if (!address) return emptyResponse(query, Rcode.NXDOMAIN);
  if (question.type !== DnsType.A) return emptyResponse(query, Rcode.NOERROR);
  return encodeDnsMessage({
    ...query,
    flags: Flags.QR | Flags.AA | (query.flags & Flags.RD) | Flags.RA,
    answers: [
      {
        name: question.name,
        type: DnsType.A,
        class: DnsClass.IN,
        ttl: 300,
        data: Buffer.alloc(0),
        value: address,
      },
    ],
    authorities: [],
    additionals: [],
  });
}

async function start(role: WorldRole): Promise<void> {
  if (role.kind === 'dns') {
    const socket = createSocket(role.address.includes(':') ? 'udp6' : 'udp4');
    socket.on('message', (bytes, sender) => {
      const answer = answerDns(role.records, bytes);
      if (answer) socket.send(answer, sender.port, sender.address);
    });
    await new Promise<void>((resolve) => socket.bind(role.port, role.address, resolve));
    return;
  }
  const server =
    role.kind === 'https'
      ? createHttpsServer(
          { cert: readFileSync(role.certPath), key: readFileSync(role.keyPath) },
          describeRequest(role.address),
        )
      : createHttpServer(role.kind === 'index' ? serveIndex : describeRequest(role.address));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(role.port, role.address, resolve);
  });
}

const configPath = process.argv[2];
if (configPath) {
  const roles = JSON.parse(readFileSync(configPath, 'utf8')) as WorldRole[];
  await Promise.all(roles.map(start));
  console.log('ready');
}
