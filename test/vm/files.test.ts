// File upload, download and listing through the API, against a real VM.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { callApi } from '../../src/cli/client.js';
import { HearthError } from '../../src/errors.js';
import { buildWheel } from '../helpers/wheel.js';
import {
  createSession,
  execute,
  startTestHearthd,
  type CreatedSession,
  type TestHearthd,
} from '../helpers/hearthd.js';

interface RawResponse {
  status: number;
  body: Buffer;
}

/** Sends a raw-body request over the test hearthd's Unix socket. */
function raw(
  socketPath: string,
  method: string,
  path: string,
  body?: Readable | Buffer,
  headers: Record<string, string | number> = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const request = httpRequest({ socketPath, method, path, headers }, async (response) => {
      const chunks: Buffer[] = [];
      for await (const chunk of response) chunks.push(chunk as Buffer);
      resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks) });
    });
    request.once('error', reject);
    if (body instanceof Readable) body.pipe(request);
    else request.end(body);
  });
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** Resolves like `work`, or rejects once `ms` pass without it settling. */
async function within<T>(ms: number, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not done within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

describe('files API', () => {
  let server: TestHearthd;
  let session: CreatedSession;
  let socketPath: string;
  const filesUrl = (path: string) =>
    `/v1/sessions/${session.id}/files?path=${encodeURIComponent(path)}`;
  const upload = (path: string, data: Buffer | Readable, headers = {}) =>
    raw(socketPath, 'PUT', filesUrl(path), data, {
      'content-type': 'application/octet-stream',
      ...headers,
    });
  const download = (path: string) => raw(socketPath, 'GET', filesUrl(path));

  before(async () => {
    server = await startTestHearthd({ maxUploadBytes: 320 * 1024 * 1024 });
    socketPath = server.target.socketPath!;
    session = await createSession(server.target, { disk_mb: 1024 });
  });

  after(async () => {
    await server.close();
  });

  it('round-trips every byte value', async () => {
    const data = Buffer.alloc(1 << 20);
    for (let i = 0; i < data.length; i++) data[i] = i % 256;
    const put = await upload('/root/bytes.bin', data);
    assert.equal(put.status, 201, put.body.toString());
    assert.deepEqual(JSON.parse(put.body.toString()), { path: '/root/bytes.bin', size: 1 << 20 });
    const inGuest = await execute(server.target, session.id, {
      language: 'bash',
      code: 'sha256sum /root/bytes.bin | cut -d" " -f1',
    });
    assert.equal(inGuest.stdout.trim(), sha256(data));
    const got = await download('/root/bytes.bin');
    assert.equal(got.status, 200);
    assert.equal(sha256(got.body), sha256(data));
  });

  it('round-trips a zip archive', async () => {
    const zip = buildWheel('roundtrip', '1.0', 'X = 1\n').contents;
    assert.equal((await upload('/tmp/archive.zip', zip)).status, 201);
    const listed = await execute(server.target, session.id, {
      code: 'import zipfile; print(sorted(zipfile.ZipFile("/tmp/archive.zip").namelist())[0])',
    });
    assert.equal(listed.stdout, 'roundtrip-1.0.dist-info/METADATA\n');
    assert.equal(sha256((await download('/tmp/archive.zip')).body), sha256(zip));
  });

  it('downloads random bytes made in the guest', async () => {
    const made = await execute(server.target, session.id, {
      language: 'bash',
      code: 'head -c 4194304 /dev/urandom > /tmp/random.bin && sha256sum /tmp/random.bin',
    });
    const got = await download('/tmp/random.bin');
    assert.equal(got.body.length, 4194304);
    assert.equal(sha256(got.body), made.stdout.split(' ')[0]);
  });

  it('keeps names in any script', async () => {
    for (const name of ['données 测试 📄.csv', 'a b#?.txt', 'plus+sign&amp.txt']) {
      const path = `/root/names/${name}`;
      const content = Buffer.from(`content of ${name}\n`);
      const put = await upload(path, content);
      assert.equal(put.status, 201, `${name}: ${put.body.toString()}`);
      assert.deepEqual((await download(path)).body, content, name);
    }
    const listing = (await callApi(
      server.target,
      'GET',
      `/v1/sessions/${session.id}/files/list?path=${encodeURIComponent('/root/names')}`,
    )) as { entries: { name: string; type: string; size: number; mode: number; mtime: string }[] };
    assert.deepEqual(
      listing.entries.map((entry) => entry.name),
      ['a b#?.txt', 'données 测试 📄.csv', 'plus+sign&amp.txt'],
    );
    const first = listing.entries[0]!;
    assert.equal(first.type, 'file');
    assert.equal(first.size, Buffer.byteLength('content of a b#?.txt\n'));
    assert.equal(first.mode, 0o644);
    assert.ok(Math.abs(Date.parse(first.mtime) - Date.now()) < 5 * 60_000, first.mtime);
  });

  it('streams 300 MiB both ways in bounded memory', async () => {
    const total = 300 * 1024 * 1024;
    const chunk = randomBytes(1 << 20);
    const hash = createHash('sha256');
    let sent = 0;
    const source = new Readable({
      read() {
        if (sent >= total) return this.push(null);
        sent += chunk.length;
        hash.update(chunk);
        this.push(chunk);
      },
    });
    const rssBefore = process.memoryUsage().rss;
    const put = await upload('/root/big.bin', source, { 'content-length': total });
    assert.equal(put.status, 201, put.body.toString());

    let peakRss = process.memoryUsage().rss;
    const downloaded = createHash('sha256');
    let received = 0;
    await new Promise<void>((resolve, reject) => {
      const request = httpRequest(
        { socketPath, method: 'GET', path: filesUrl('/root/big.bin') },
        (response) => {
          response.on('data', (data: Buffer) => {
            downloaded.update(data);
            received += data.length;
            peakRss = Math.max(peakRss, process.memoryUsage().rss);
          });
          response.once('end', resolve);
          response.once('error', reject);
        },
      );
      request.once('error', reject);
      request.end();
    });
    assert.equal(received, total);
    assert.equal(downloaded.digest('hex'), hash.digest('hex'));
    const growthMib = (peakRss - rssBefore) / (1 << 20);
    assert.ok(growthMib < 100, `hearthd and the test grew by ${growthMib.toFixed(0)} MiB`);
    await execute(server.target, session.id, { language: 'bash', code: 'rm /root/big.bin' });
  });

  it('rejects an upload over the limit and leaves no file', async () => {
    const tooBig = Buffer.alloc(320 * 1024 * 1024 + 1);
    const put = await upload('/root/too-big.bin', tooBig);
    assert.equal(put.status, 413);
    assert.equal(JSON.parse(put.body.toString()).error.code, 'file_too_large');
    const check = await execute(server.target, session.id, {
      language: 'bash',
      code: 'ls -a /root | grep -c -e too-big -e hearth-upload || true',
    });
    assert.equal(check.stdout, '0\n');
  });

  it('rejects paths that escape or are relative', async () => {
    for (const path of ['/root/../etc/passwd', '../etc/passwd', 'relative.txt', '/a/..']) {
      const put = await upload(path, Buffer.from('x'));
      assert.equal(put.status, 400, path);
      assert.equal(JSON.parse(put.body.toString()).error.code, 'invalid_path', path);
      const get = await download(path);
      assert.equal(get.status, 400, path);
    }
  });

  it('answers 404 file_not_found for a missing file', async () => {
    const got = await download('/root/no-such-file');
    assert.equal(got.status, 404);
    assert.equal(JSON.parse(got.body.toString()).error.code, 'file_not_found');
  });

  it('stops a download its client leaves', async () => {
    // Sparse, so the guest can read it at once, but far too large to send before the check.
    await execute(server.target, session.id, {
      language: 'bash',
      code: 'truncate -s 64G /root/endless.bin',
    });
    await new Promise<void>((resolve, reject) => {
      const request = httpRequest(
        { socketPath, method: 'GET', path: filesUrl('/root/endless.bin') },
        (response) => {
          response.once('data', () => {
            request.destroy();
            resolve();
          });
        },
      );
      request.once('error', reject);
      request.end();
    });

    // The agent keeps a download's file open while it reads it.
    const check = await execute(server.target, session.id, {
      language: 'bash',
      code:
        'for i in $(seq 50); do ls -l /proc/1/fd | grep -q endless.bin || break; sleep 0.1; done\n' +
        'ls -l /proc/1/fd | grep -c endless.bin; rm /root/endless.bin',
    });
    assert.equal(check.stdout, '0\n');
  });

  it('keeps the session usable beside a stalled download', async () => {
    await execute(server.target, session.id, {
      language: 'bash',
      code: 'truncate -s 1G /root/stalled.bin',
    });
    // A client that takes the headers and then reads nothing.
    let stalled: ReturnType<typeof httpRequest> | undefined;
    await new Promise<void>((resolve, reject) => {
      stalled = httpRequest(
        { socketPath, method: 'GET', path: filesUrl('/root/stalled.bin') },
        (response) => {
          response.pause();
          resolve();
        },
      );
      stalled.once('error', reject);
      stalled.end();
    });
    await new Promise((resolve) => setTimeout(resolve, 1000));

    const result = await within(20_000, execute(server.target, session.id, { code: 'print(1)' }));
    assert.equal(result.stdout, '1\n');
    const other = await within(20_000, download('/etc/hostname'));
    assert.equal(other.status, 200);
    stalled!.destroy();
    await execute(server.target, session.id, { language: 'bash', code: 'rm /root/stalled.bin' });
  });

  it('downloads files that report no size', async () => {
    const catOutput = await execute(server.target, session.id, {
      language: 'bash',
      code: 'cat /proc/version',
    });
    const version = await download('/proc/version');
    assert.equal(version.status, 200);
    assert.equal(version.body.toString(), catOutput.stdout);
    // The kernel log waits for new messages once it is read, so its download must end anyway.
    const log = await within(20_000, download('/proc/kmsg'));
    assert.equal(log.status, 200);
  });

  it('refuses to download a device that never ends', async () => {
    const got = await download('/dev/zero');
    assert.equal(got.status, 400);
    assert.equal(JSON.parse(got.body.toString()).error.code, 'not_a_file');
    const alive = await execute(server.target, session.id, { code: 'print("alive")' });
    assert.equal(alive.stdout, 'alive\n');
  });

  it('refuses to download a directory', async () => {
    const got = await download('/root');
    assert.equal(got.status, 400);
    assert.equal(JSON.parse(got.body.toString()).error.code, 'not_a_file');
  });

  it('lists a missing directory as file_not_found', async () => {
    await assert.rejects(
      callApi(server.target, 'GET', `/v1/sessions/${session.id}/files/list?path=/nope`),
      (error: HearthError) => error.code === 'file_not_found',
    );
  });

  it('lists a file path as not_a_directory', async () => {
    await assert.rejects(
      callApi(server.target, 'GET', `/v1/sessions/${session.id}/files/list?path=/etc/hostname`),
      (error: HearthError) =>
        error.code === 'not_a_directory' && error.message === '/etc/hostname is not a directory',
    );
  });
});
