// Request validation of the API, in-process: none of these requests reaches a VM.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { createApiHandler } from '../../src/api/server.js';
import { SessionManager } from '../../src/sessions/manager.js';
import { Store } from '../../src/store/db.js';
import type { VmmDriver } from '../../src/vmm/types.js';

const unusedDriver: VmmDriver = {
  name: 'qemu',
  start: () => Promise.reject(new Error('validation tests never boot a VM')),
};

describe('API request validation', () => {
  let server: Server;
  let baseUrl: string;

  before(async () => {
    const store = new Store(':memory:');
    const manager = new SessionManager({
      driver: unusedDriver,
      images: { kernelPath: '/nonexistent', rootfsPath: '/nonexistent' },
      runRoot: '/nonexistent',
      logDir: '/nonexistent',
      bootTimeoutMs: 1000,
      maxQueuedExecutions: 1,
      store,
    });
    server = createServer(
      createApiHandler({
        manager,
        store,
        logger: pino({ level: 'silent' }),
        maxLifetimeSeconds: 600,
      }),
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  async function post(path: string, body: string, contentType = 'application/json') {
    const response = await fetch(baseUrl + path, {
      method: 'POST',
      headers: { 'content-type': contentType },
      body,
    });
    return {
      status: response.status,
      body: (await response.json()) as { error: { code: string; message: string } },
    };
  }

  const cases: [string, string, unknown, number, string, RegExp][] = [
    ['unknown field', '/v1/sessions', { gpus: 1 }, 400, 'invalid_request', /gpus/],
    ['too many vCPUs', '/v1/sessions', { cpu_count: 9 }, 400, 'invalid_request', /cpu_count/],
    ['zero vCPUs', '/v1/sessions', { cpu_count: 0 }, 400, 'invalid_request', /cpu_count/],
    [
      'fractional memory',
      '/v1/sessions',
      { memory_mb: 512.5 },
      400,
      'invalid_request',
      /memory_mb/,
    ],
    ['bad env name', '/v1/sessions', { env: { 'A-B': 'x' } }, 400, 'invalid_request', /env/],
    [
      'lifetime over maximum',
      '/v1/sessions',
      { lifetime_seconds: 601 },
      400,
      'lifetime_too_long',
      /600/,
    ],
    [
      'egress allow list',
      '/v1/sessions',
      { egress: { allow_cidrs: ['10.0.0.0/8'] } },
      400,
      'egress_not_supported',
      /egress/,
    ],
    [
      'lone surrogate in env',
      '/v1/sessions',
      { env: { B: '\ud800' } },
      400,
      'invalid_request',
      /Unicode/,
    ],
    [
      'too many env entries',
      '/v1/sessions',
      { env: Object.fromEntries(Array.from({ length: 1001 }, (_, i) => [`V${i}`, 'x'])) },
      400,
      'invalid_request',
      /1000 variables/,
    ],
    [
      'env variable over 64 KiB',
      '/v1/sessions',
      { env: { BIG: 'x'.repeat(64 * 1024) } },
      400,
      'invalid_request',
      /65536 bytes/,
    ],
    [
      'NUL in Bash code',
      '/v1/sessions/ses_x/execute',
      { code: 'echo a\u0000b', language: 'bash' },
      400,
      'invalid_request',
      /NUL/,
    ],
    ['missing code', '/v1/sessions/ses_x/execute', {}, 400, 'invalid_request', /code/],
    [
      'unknown language',
      '/v1/sessions/ses_x/execute',
      { code: '1', language: 'ruby' },
      400,
      'invalid_request',
      /language/,
    ],
    [
      'relative cwd',
      '/v1/sessions/ses_x/execute',
      { code: '1', cwd: 'tmp' },
      400,
      'invalid_request',
      /absolute/,
    ],
    [
      'negative timeout',
      '/v1/sessions/ses_x/execute',
      { code: '1', timeout_seconds: -1 },
      400,
      'invalid_request',
      /timeout_seconds/,
    ],
    [
      'unknown session',
      '/v1/sessions/ses_x/execute',
      { code: '1' },
      404,
      'session_not_found',
      /ses_x/,
    ],
  ];
  for (const [name, path, body, status, code, message] of cases) {
    it(`rejects ${name}`, async () => {
      const response = await post(path, JSON.stringify(body));
      assert.equal(response.status, status);
      assert.equal(response.body.error.code, code);
      assert.match(response.body.error.message, message);
    });
  }

  it('rejects malformed JSON', async () => {
    const response = await post('/v1/sessions', '{"cpu_count":');
    assert.equal(response.status, 400);
    assert.equal(response.body.error.code, 'invalid_request');
  });

  it('rejects a non-JSON content type', async () => {
    const response = await post('/v1/sessions', 'cpu_count=1', 'application/x-www-form-urlencoded');
    assert.equal(response.status, 415);
    assert.equal(response.body.error.code, 'unsupported_media_type');
  });

  it('answers 400 for a target that is not a path', async () => {
    const { request } = await import('node:http');
    const status = await new Promise<number>((resolve, reject) => {
      const url = new URL(baseUrl);
      const call = request(
        { host: url.hostname, port: url.port, path: '//', method: 'GET' },
        (response) => {
          response.resume();
          resolve(response.statusCode ?? 0);
        },
      );
      call.once('error', reject);
      call.end();
    });
    assert.ok(status === 400 || status === 404, `status ${status}`);
    const health = await fetch(baseUrl + '/healthz');
    assert.equal(health.status, 200);
  });

  it('answers 404 for a malformed percent-encoded id', async () => {
    const response = await fetch(baseUrl + '/v1/sessions/%E0%A4%A');
    assert.equal(response.status, 404);
  });

  it('answers 404 for an unknown route and 405 for a wrong method', async () => {
    const missing = await fetch(baseUrl + '/v2/things');
    assert.equal(missing.status, 404);
    const wrongMethod = await fetch(baseUrl + '/v1/sessions', { method: 'PUT' });
    assert.equal(wrongMethod.status, 405);
    assert.equal(
      ((await wrongMethod.json()) as { error: { code: string } }).error.code,
      'method_not_allowed',
    );
  });
});
