// Error mapping of the Firecracker API client against real Unix socket servers.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';

import { FirecrackerApiClient } from '../../src/vmm/firecracker/api-client.js';
import { FirecrackerApiError, FirecrackerError } from '../../src/vmm/firecracker/errors.js';
import { startFakeApi } from './fake-firecracker.js';
import { specIfPresent, specPath } from './spec-location.js';
import { validateResponse } from './swagger-validator.js';

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'hearth-fc-client-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function closeAfter(t: TestContext, server: Server | ReturnType<typeof createNetServer>) {
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        if ('closeAllConnections' in server) server.closeAllConnections();
      }),
  );
}

async function listen(server: Server | ReturnType<typeof createNetServer>, path: string) {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
}

test('fault_message becomes FirecrackerApiError', async (t) => {
  const dir = await tempDir(t);
  const socketPath = join(dir, 'api.sock');
  const faultMessage =
    'The vCPU number is invalid! The vCPU number can only be 1 or an even number.';
  const server = await startFakeApi(socketPath, {
    recordPath: join(dir, 'events.jsonl'),
    faults: [{ method: 'PUT', path: '/machine-config', faultMessage }],
  });
  closeAfter(t, server);
  const client = new FirecrackerApiClient({ socketPath });

  await assert.rejects(client.putMachineConfig({ vcpu_count: 3, mem_size_mib: 128 }), (error) => {
    assert.ok(error instanceof FirecrackerApiError);
    assert.ok(error instanceof FirecrackerError, 'API errors share the driver error root');
    assert.equal(error.code, 'firecracker_api_error');
    assert.equal(error.method, 'PUT');
    assert.equal(error.path, '/machine-config');
    assert.equal(error.statusCode, 400);
    assert.equal(error.faultMessage, faultMessage);
    assert.ok(error.message.includes(faultMessage));
    return true;
  });

  const spec = specIfPresent();
  if (!spec) {
    t.diagnostic(`the fault body was not checked against the spec: ${specPath} is absent`);
    return;
  }
  const errors = validateResponse(spec, { method: 'PUT', path: '/machine-config' }, 400, {
    fault_message: faultMessage,
  });
  assert.deepEqual(errors, [], 'the fake answers faults in the shape the spec gives');
});

test('non-JSON error body becomes the fault message', async (t) => {
  const dir = await tempDir(t);
  const socketPath = join(dir, 'api.sock');
  const server = createHttpServer((_request, response) => {
    response.writeHead(500).end('internal failure\n');
  });
  await listen(server, socketPath);
  closeAfter(t, server);
  const client = new FirecrackerApiClient({ socketPath });

  await assert.rejects(client.patchVmState('Paused'), (error) => {
    assert.ok(error instanceof FirecrackerApiError);
    assert.equal(error.statusCode, 500);
    assert.equal(error.method, 'PATCH');
    assert.equal(error.path, '/vm');
    assert.equal(error.faultMessage, 'internal failure');
    return true;
  });
});

test('missing API socket is firecracker_unreachable', async (t) => {
  const dir = await tempDir(t);
  const socketPath = join(dir, 'absent.sock');
  const client = new FirecrackerApiClient({ socketPath });

  await assert.rejects(client.getVersion(), (error) => {
    assert.ok(error instanceof FirecrackerError);
    assert.equal(error.code, 'firecracker_unreachable');
    assert.ok(error.message.includes(socketPath), 'the message names the socket');
    assert.match(error.message, /ENOENT/);
    return true;
  });
});

test('refused connection is firecracker_unreachable', async (t) => {
  const dir = await tempDir(t);
  const socketPath = join(dir, 'not-a-socket');
  await writeFile(socketPath, '');
  const client = new FirecrackerApiClient({ socketPath });

  await assert.rejects(client.putVsock({ guest_cid: 3, uds_path: '/v' }), {
    code: 'firecracker_unreachable',
  });
});

test('dropped connection is firecracker_unreachable', async (t) => {
  const dir = await tempDir(t);
  const socketPath = join(dir, 'api.sock');
  const server = createNetServer((socket) => socket.once('data', () => socket.destroy()));
  await listen(server, socketPath);
  closeAfter(t, server);
  const client = new FirecrackerApiClient({ socketPath });

  await assert.rejects(client.createSyncAction('InstanceStart'), {
    code: 'firecracker_unreachable',
  });
});

test('unanswered request is firecracker_timeout', async (t) => {
  const dir = await tempDir(t);
  const socketPath = join(dir, 'api.sock');
  const server = await startFakeApi(socketPath, {
    recordPath: join(dir, 'events.jsonl'),
    hang: [{ method: 'PUT', path: '/boot-source' }],
  });
  closeAfter(t, server);
  const client = new FirecrackerApiClient({ socketPath, timeoutMs: 100 });

  const started = Date.now();
  await assert.rejects(client.putBootSource({ kernel_image_path: '/k' }), (error) => {
    assert.ok(error instanceof FirecrackerError);
    assert.equal(error.code, 'firecracker_timeout');
    assert.match(error.message, /PUT \/boot-source/);
    assert.match(error.message, /100 ms/);
    return true;
  });
  assert.ok(Date.now() - started < 2_000, 'the timeout fired late');
});

test('client without socket or transport is rejected', () => {
  assert.throws(() => new FirecrackerApiClient({}), { code: 'firecracker_invalid_config' });
});

test('GET /version without a version is rejected', async () => {
  const client = new FirecrackerApiClient({
    transport: async () => ({ statusCode: 200, body: '{"app_name":"other"}' }),
  });

  await assert.rejects(client.getVersion(), { code: 'firecracker_unreachable' });
});
