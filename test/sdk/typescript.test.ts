// The TypeScript SDK against a real hearthd process on 127.0.0.1, with real VMs.
import {
  AbortError,
  AuthenticationError,
  ConnectionError,
  Hearth,
  HearthError,
  InvalidRequestError,
  NotFoundError,
  PayloadTooLargeError,
  SessionClosedError,
  TimeoutError,
  type CreateSessionJson,
  type ExecuteRequestJson,
  type ExecuteResultJson,
  type FileListJson,
  type FileWrittenJson,
  type Session,
  type SessionJson,
} from '@hearth/sdk';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { z } from 'zod';
import type * as schema from '../../src/api/schema.js';
import { startHearthdProcess, type HearthdProcess } from './hearthd-process.js';
import { buildZip } from './zip.js';

// The SDK cannot import the server's zod schema, so its wire types are checked against it
// here: if the two drift apart, the build fails.
export const wireTypesMatchSchema = {
  session: (json: schema.Session): SessionJson => json,
  sessionBack: (json: SessionJson): schema.Session => json,
  result: (json: schema.ExecuteResult): ExecuteResultJson => json,
  resultBack: (json: ExecuteResultJson): schema.ExecuteResult => json,
  createRequest: (json: CreateSessionJson): z.input<typeof schema.CreateSessionRequest> => json,
  executeRequest: (json: ExecuteRequestJson): z.input<typeof schema.ExecuteRequest> => json,
  written: (json: z.infer<typeof schema.FileWritten>): FileWrittenJson => json,
  listing: (json: z.infer<typeof schema.FileListing>): FileListJson => json,
  listingBack: (json: FileListJson): z.infer<typeof schema.FileListing> => json,
};

// Small enough to test the limit cheaply, and over the largest file the tests send.
const MAX_UPLOAD_BYTES = 8 * 1024 * 1024;
const MiB = 1024 * 1024;

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Yields zero bytes in 1 MiB chunks, for uploads sent as a stream of unknown length. */
async function* zeroChunks(totalBytes: number): AsyncGenerator<Uint8Array> {
  for (let sent = 0; sent < totalBytes; sent += MiB) yield new Uint8Array(MiB);
}

async function rejection(promise: Promise<unknown>): Promise<HearthError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof HearthError) return error;
    throw error;
  }
  assert.fail('expected the call to reject');
}

/** Computes a file's SHA-256 inside the guest. */
async function guestSha256(session: Session, path: string): Promise<string> {
  const result = await session.execute(
    `import hashlib\nprint(hashlib.sha256(open(${JSON.stringify(path)}, 'rb').read()).hexdigest())`,
  );
  assert.equal(result.status, 'ok', result.stderr);
  return result.stdout.trim();
}

describe('TypeScript SDK', () => {
  let server: HearthdProcess;
  let hearth: Hearth;
  let otherKey: string;
  let session: Session;
  let localDir: string;

  before(async () => {
    server = await startHearthdProcess({
      env: { HEARTH_MAX_UPLOAD_BYTES: String(MAX_UPLOAD_BYTES) },
    });
    const key = await server.createKey('sdk-test');
    otherKey = await server.createKey('sdk-test-other');
    hearth = new Hearth({ baseUrl: server.baseUrl, apiKey: key });
    session = await hearth.sessions.create({
      cpuCount: 1,
      memoryMb: 512,
      env: { GREETING: 'hello' },
      lifetimeSeconds: 900,
    });
    localDir = await mkdtemp(join(tmpdir(), 'hearth-sdk-local-'));
  });

  after(async () => {
    await session?.close().catch(() => undefined);
    await server?.stop();
    if (localDir) await rm(localDir, { recursive: true, force: true });
  });

  describe('sessions', () => {
    it('creates a session with the requested options', () => {
      assert.match(session.id, /^ses_/);
      assert.equal(session.info.state, 'ready');
      assert.equal(session.info.cpuCount, 1);
      assert.equal(session.info.memoryMb, 512);
      assert.deepEqual(session.info.envKeys, ['GREETING']);
      assert.match(session.info.accelerator ?? '', /^(kvm|tcg)$/);
      assert.equal(session.info.startPath, 'boot');
      const lifetimeMs = session.info.expiresAt.getTime() - session.info.createdAt.getTime();
      assert.equal(lifetimeMs, 900_000);
    });

    it('gets a session by id', async () => {
      const found = await hearth.sessions.get(session.id);
      assert.equal(found.id, session.id);
      assert.equal(found.info.state, 'ready');
    });

    it('lists the session', async () => {
      const sessions = await hearth.sessions.list();
      assert.ok(sessions.some((listed) => listed.id === session.id));
    });

    it('maps an unknown session to NotFoundError', async () => {
      const error = await rejection(hearth.sessions.get('ses_0000000000000000'));
      assert.ok(error instanceof NotFoundError);
      assert.equal(error.code, 'session_not_found');
      assert.equal(error.status, 404);
    });

    it('maps invalid options to InvalidRequestError', async () => {
      const error = await rejection(hearth.sessions.create({ cpuCount: 99 }));
      assert.ok(error instanceof InvalidRequestError);
      assert.equal(error.code, 'invalid_request');
      assert.equal(error.status, 400);
      assert.match(error.message, /cpu_count/);
    });
  });

  describe('execute', () => {
    it('keeps Python variables between calls', async () => {
      await session.execute('x = 41');
      const result = await session.execute('print(x + 1)');
      assert.equal(result.stdout, '42\n');
      assert.equal(result.status, 'ok');
      assert.equal(result.exitCode, 0);
      assert.equal(result.error, null);
      assert.equal(typeof result.executionTimeSeconds, 'number');
    });

    it('returns a Python exception in the result', async () => {
      const result = await session.execute('print("before")\nraise ValueError("bad")');
      assert.equal(result.status, 'error');
      assert.equal(result.exitCode, 1);
      assert.equal(result.stdout, 'before\n');
      assert.equal(result.error?.name, 'ValueError');
      assert.equal(result.error?.value, 'bad');
      assert.match(result.error?.traceback ?? '', /Traceback/);
    });

    it('runs Bash with env and cwd', async () => {
      const result = await session.execute('pwd; echo "$CALL_ONLY $GREETING"; exit 3', {
        language: 'bash',
        env: { CALL_ONLY: 'one' },
        cwd: '/tmp',
      });
      assert.equal(result.stdout, '/tmp\none hello\n');
      assert.equal(result.exitCode, 3);
      assert.equal(result.status, 'error');
    });

    it('streams the same bytes as the buffered result', async () => {
      const code = [
        'import sys, time',
        'for i in range(5):',
        '    print(f"line {i} ✓ ünïcode 🙂", flush=True)',
        '    sys.stderr.write(f"err {i}\\n"); sys.stderr.flush()',
        '    time.sleep(0.1)',
      ].join('\n');
      const stdoutChunks: string[] = [];
      const stderrChunks: string[] = [];
      const streamed = await session.execute(code, {
        onStdout: (data) => stdoutChunks.push(data),
        onStderr: (data) => stderrChunks.push(data),
      });
      const buffered = await session.execute(code);

      assert.ok(stdoutChunks.length >= 1);
      assert.equal(stdoutChunks.join(''), streamed.stdout);
      assert.equal(stderrChunks.join(''), streamed.stderr);
      assert.equal(streamed.stdout, buffered.stdout);
      assert.equal(streamed.stderr, buffered.stderr);
      assert.match(buffered.stdout, /^line 0 ✓ ünïcode 🙂\n/);
      assert.equal(buffered.stdout.split('\n').length, 6);
    });

    it('returns raw output bytes on request', async () => {
      const result = await session.execute("printf '\\xff\\x00a'", {
        language: 'bash',
        rawOutput: true,
      });
      assert.deepEqual([...(result.stdoutRaw ?? [])], [0xff, 0x00, 0x61]);
      assert.equal(result.stdout, '\ufffd\u0000a');
      assert.equal(result.stdoutTotalBytes, 3);
    });

    it('turns timeoutMs into the guest time limit', async () => {
      const started = Date.now();
      const result = await session.execute(
        'import time\nprint("started", flush=True)\ntime.sleep(30)',
        {
          timeoutMs: 1500,
        },
      );
      assert.equal(result.status, 'timeout');
      assert.equal(result.stdout, 'started\n');
      assert.ok(Date.now() - started < 20_000, 'the call outlived its time limit');
    });
  });

  describe('files', () => {
    it('round-trips 1 MiB of every byte value', async () => {
      const data = Buffer.alloc(MiB);
      for (let index = 0; index < data.length; index += 1) data[index] = index % 256;

      const written = await session.files.write('/tmp/every-byte.bin', data);
      assert.deepEqual(written, { path: '/tmp/every-byte.bin', size: MiB });
      const read = await session.files.read('/tmp/every-byte.bin', { format: 'bytes' });
      assert.ok(read instanceof Uint8Array);
      assert.equal(read.length, MiB);
      assert.equal(sha256(read), sha256(data));
      assert.equal(await guestSha256(session, '/tmp/every-byte.bin'), sha256(data));
    });

    it('round-trips a zip that the guest can open', async () => {
      const zip = buildZip([
        { name: 'hello.txt', data: Buffer.from('hello from the host\n') },
        { name: 'données/数据.bin', data: randomBytes(200_000) },
        { name: 'zeros.bin', data: Buffer.alloc(300_000) },
      ]);
      await session.files.write('/tmp/archive.zip', zip);

      const check = await session.execute(
        [
          'import zipfile',
          'with zipfile.ZipFile("/tmp/archive.zip") as archive:',
          '    print(archive.testzip())',
          '    print(",".join(archive.namelist()))',
          '    print(archive.read("hello.txt").decode(), end="")',
        ].join('\n'),
      );
      assert.equal(check.stderr, '');
      assert.equal(
        check.stdout,
        'None\nhello.txt,données/数据.bin,zeros.bin\nhello from the host\n',
      );
      const read = await session.files.read('/tmp/archive.zip', { format: 'bytes' });
      assert.equal(sha256(read), sha256(zip));
    });

    it('streams 4 MiB of random bytes both ways', async () => {
      const data = randomBytes(4 * MiB);
      async function* chunks() {
        for (let offset = 0; offset < data.length; offset += 64 * 1024) {
          yield data.subarray(offset, offset + 64 * 1024);
        }
      }
      const written = await session.files.write('/tmp/random.bin', chunks());
      assert.equal(written.size, data.length);

      const stream = await session.files.read('/tmp/random.bin', { format: 'stream' });
      const hash = createHash('sha256');
      let size = 0;
      const reader = stream.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        hash.update(value);
        size += value.length;
      }
      assert.equal(size, data.length);
      assert.equal(hash.digest('hex'), sha256(data));
      assert.equal(await guestSha256(session, '/tmp/random.bin'), sha256(data));
    });

    it('uploads from a web stream and a Node file stream', async () => {
      const data = randomBytes(MiB);
      const web = new ReadableStream<Uint8Array>({
        start(controller) {
          for (let offset = 0; offset < data.length; offset += 100_000) {
            controller.enqueue(data.subarray(offset, offset + 100_000));
          }
          controller.close();
        },
      });
      await session.files.write('/tmp/from-web-stream.bin', web);
      assert.equal(await guestSha256(session, '/tmp/from-web-stream.bin'), sha256(data));

      const localFile = join(localDir, 'upload-source.bin');
      await writeFile(localFile, data);
      const written = await session.files.write(
        '/tmp/from-file-stream.bin',
        createReadStream(localFile),
      );
      assert.equal(written.size, MiB);
      assert.equal(await guestSha256(session, '/tmp/from-file-stream.bin'), sha256(data));
    });

    it('writes and reads text under a non-ASCII name', async () => {
      const path = '/tmp/заметки 笔记 ✓.txt';
      await session.files.write(path, 'première ligne\nzweite Zeile 🙂\n');
      assert.equal(await session.files.read(path), 'première ligne\nzweite Zeile 🙂\n');
      const listing = await session.files.list('/tmp');
      assert.ok(listing.entries.some((entry) => entry.name === 'заметки 笔记 ✓.txt'));
    });

    it('lists a directory with types, sizes and times', async () => {
      await session.files.write('/tmp/listed/a.txt', 'abc');
      await session.execute(
        'mkdir -p /tmp/listed/sub && ln -sf a.txt /tmp/listed/link && chmod 640 /tmp/listed/a.txt',
        { language: 'bash' },
      );

      const listing = await session.files.list('/tmp/listed');
      assert.equal(listing.path, '/tmp/listed');
      assert.equal(listing.truncated, false);
      const byName = new Map(listing.entries.map((entry) => [entry.name, entry]));
      assert.deepEqual([...byName.keys()].sort(), ['a.txt', 'link', 'sub']);
      const file = byName.get('a.txt')!;
      assert.equal(file.type, 'file');
      assert.equal(file.size, 3);
      assert.equal(file.mode & 0o777, 0o640);
      assert.equal(file.path, '/tmp/listed/a.txt');
      assert.ok(Math.abs(file.mtime.getTime() - Date.now()) < 10 * 60_000);
      assert.equal(byName.get('sub')?.type, 'directory');
      assert.equal(byName.get('link')?.type, 'symlink');
    });

    it('maps a missing file to NotFoundError', async () => {
      const error = await rejection(session.files.read('/tmp/does-not-exist'));
      assert.ok(error instanceof NotFoundError);
      assert.equal(error.code, 'file_not_found');
      assert.equal(error.status, 404);
    });

    it('rejects reading a directory', async () => {
      const error = await rejection(session.files.read('/tmp'));
      assert.ok(error instanceof InvalidRequestError);
      assert.equal(error.code, 'not_a_file');
      assert.equal(error.status, 400);
    });

    it('rejects relative and escaping guest paths', async () => {
      for (const path of ['relative.txt', '/tmp/../etc/passwd', '/tmp/a\0b']) {
        const error = await rejection(session.files.write(path, 'x'));
        assert.ok(error instanceof InvalidRequestError, path);
        assert.equal(error.code, 'invalid_path', path);
      }
    });

    it('rejects an upload over the server limit', async () => {
      const error = await rejection(
        session.files.write('/tmp/too-large.bin', new Uint8Array(MAX_UPLOAD_BYTES + 1)),
      );
      assert.ok(error instanceof PayloadTooLargeError);
      assert.equal(error.code, 'file_too_large');
      assert.equal(error.status, 413);
    });

    it('rejects a streamed upload over the limit', async () => {
      const error = await rejection(
        session.files.write('/tmp/too-large-stream.bin', zeroChunks(MAX_UPLOAD_BYTES + MiB)),
      );
      assert.ok(error instanceof PayloadTooLargeError, String(error));
      assert.equal(error.code, 'file_too_large');
      const missing = await rejection(session.files.read('/tmp/too-large-stream.bin'));
      assert.equal(missing.code, 'file_not_found');
    });

    // A 413 sent before the body was read must close that connection, or fetch reuses it
    // and the next request waits behind the rest of the old body.
    it('keeps working after a rejected streamed upload', async () => {
      const failures: string[] = [];
      for (let call = 0; call < 4; call += 1) {
        const started = Date.now();
        try {
          await session.files.write('/tmp/after-413.bin', new Uint8Array(1000));
        } catch (error) {
          failures.push(`call ${call} failed after ${Date.now() - started} ms: ${error}`);
        }
        assert.ok(Date.now() - started < 3000, `call ${call} took ${Date.now() - started} ms`);
      }
      assert.deepEqual(failures, []);
    });

    it('downloads a file into a local directory', async () => {
      const data = randomBytes(300_000);
      await session.files.write('/tmp/download-me.bin', data);
      const path = await session.files.downloadTo('/tmp/download-me.bin', localDir);
      assert.equal(path, join(localDir, 'download-me.bin'));
      assert.equal(sha256(await readFile(path)), sha256(data));

      const renamed = await session.files.downloadTo('/tmp/download-me.bin', localDir, {
        name: 'renamed.bin',
      });
      assert.equal(renamed, join(localDir, 'renamed.bin'));
    });

    it('rejects download names that escape', async () => {
      const inner = join(localDir, 'inner');
      await mkdir(inner);
      const names = ['../escaped', 'a/b', '/tmp/absolute', '..', '.', '', 'back\\slash'];
      for (const name of names) {
        const error = await rejection(
          session.files.downloadTo('/tmp/download-me.bin', inner, { name }),
        );
        assert.ok(error instanceof InvalidRequestError, name);
        assert.equal(error.code, 'invalid_path', name);
      }
      const fromRemote = await rejection(session.files.downloadTo('/tmp/', inner));
      assert.equal(fromRemote.code, 'invalid_path');
      assert.equal(existsSync(join(localDir, 'escaped')), false);
    });

    it('replaces a planted symlink instead of writing through it', async () => {
      const outside = join(localDir, 'outside.txt');
      const inner = join(localDir, 'planted');
      await mkdir(inner);
      await writeFile(outside, 'untouched');
      await symlink(outside, join(inner, 'download-me.bin'));

      await session.files.downloadTo('/tmp/download-me.bin', inner);
      assert.equal(await readFile(outside, 'utf8'), 'untouched');
      assert.ok((await lstat(join(inner, 'download-me.bin'))).isFile());
    });
  });

  describe('abort and timeouts', () => {
    it('rejects at once with an aborted signal', async () => {
      const controller = new AbortController();
      controller.abort();
      const error = await rejection(hearth.sessions.list({ signal: controller.signal }));
      assert.ok(error instanceof AbortError);
      assert.equal(error.code, 'aborted');
    });

    it('aborts a running execute', async () => {
      const controller = new AbortController();
      const started = Date.now();
      setTimeout(() => controller.abort(), 500);
      const error = await rejection(
        session.execute('import time\ntime.sleep(30)', {
          timeoutMs: 4000,
          signal: controller.signal,
        }),
      );
      assert.ok(error instanceof AbortError);
      assert.ok(Date.now() - started < 3000, 'the abort did not end the call promptly');

      // The code keeps running in the guest until its own limit; the session then works.
      const next = await session.execute('print("still here")');
      assert.equal(next.stdout, 'still here\n');
    });

    it('aborts a streamed execute from its callback', async () => {
      const controller = new AbortController();
      const error = await rejection(
        session.execute(
          'import time\nfor i in range(40):\n    print(i, flush=True)\n    time.sleep(0.1)',
          {
            timeoutMs: 6000,
            signal: controller.signal,
            onStdout: () => controller.abort(),
          },
        ),
      );
      assert.ok(error instanceof AbortError);
      const next = await session.execute('print("after")');
      assert.equal(next.stdout, 'after\n');
    });

    it('aborts a download stream midway', async () => {
      const controller = new AbortController();
      const stream = await session.files.read('/tmp/random.bin', {
        format: 'stream',
        signal: controller.signal,
      });
      const reader = stream.getReader();
      await reader.read();
      controller.abort();
      let failure: unknown;
      try {
        for (;;) if ((await reader.read()).done) break;
      } catch (error) {
        failure = error;
      }
      assert.ok(failure instanceof AbortError, String(failure));
    });

    it('rejects with TimeoutError after requestTimeoutMs', async () => {
      const error = await rejection(
        session.execute('import time\ntime.sleep(3)', { timeoutMs: 3000, requestTimeoutMs: 300 }),
      );
      assert.ok(error instanceof TimeoutError);
      assert.equal(error.code, 'request_timeout');
    });

    it('maps an unreachable server to ConnectionError', async () => {
      const nowhere = new Hearth({ baseUrl: 'http://127.0.0.1:1', apiKey: 'hk_unused' });
      const error = await rejection(nowhere.sessions.list());
      assert.ok(error instanceof ConnectionError);
      assert.equal(error.code, 'server_unreachable');
    });
  });

  describe('authentication', () => {
    it('rejects a request without a key', async () => {
      const anonymous = new Hearth({ baseUrl: server.baseUrl, apiKey: '' });
      const error = await rejection(anonymous.sessions.list());
      assert.ok(error instanceof AuthenticationError);
      assert.equal(error.code, 'unauthorized');
      assert.equal(error.status, 401);
    });

    it('rejects an unknown key', async () => {
      const stranger = new Hearth({ baseUrl: server.baseUrl, apiKey: 'hk_not-a-real-key' });
      const error = await rejection(stranger.sessions.get(session.id));
      assert.ok(error instanceof AuthenticationError);
      assert.equal(error.code, 'unauthorized');
    });

    it("hides a session from another key's client", async () => {
      const other = new Hearth({ baseUrl: server.baseUrl, apiKey: otherKey });
      const error = await rejection(other.sessions.get(session.id));
      assert.ok(error instanceof NotFoundError);
      assert.equal(error.code, 'session_not_found');
      const listed = await other.sessions.list();
      assert.equal(
        listed.some((found) => found.id === session.id),
        false,
      );

      for (const [method, suffix, body] of [
        ['POST', '/execute', '{"code": "print(1)"}'],
        ['GET', '/files?path=/tmp/every-byte.bin', undefined],
        ['DELETE', '', undefined],
      ] as const) {
        const response = await fetch(`${server.baseUrl}/v1/sessions/${session.id}${suffix}`, {
          method,
          body,
          headers: { authorization: `Bearer ${otherKey}`, 'content-type': 'application/json' },
        });
        assert.equal(response.status, 404, `${method} ${suffix}`);
        const json = (await response.json()) as { error: { code: string } };
        assert.equal(json.error.code, 'session_not_found', `${method} ${suffix}`);
      }
      // Still alive: busy when an earlier test's code is still running in the guest.
      assert.match((await session.refresh()).state, /^(ready|busy)$/);
    });
  });

  describe('close', () => {
    it('closes the session and rejects later calls', async () => {
      const info = await session.close();
      assert.equal(info.state, 'closed');
      assert.equal(info.closeReason, 'closed');

      const error = await rejection(session.execute('print(1)'));
      assert.ok(error instanceof SessionClosedError);
      assert.equal(error.code, 'session_closed');
      const again = await session.close();
      assert.equal(again.state, 'closed');
    });
  });
});
