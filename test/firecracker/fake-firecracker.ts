// A stand-in for the firecracker and jailer binaries, for machines where neither can run. It
// serves Firecracker's API on --api-sock, keeps enough state to reject requests in the wrong
// order, serves the hybrid vsock socket once the instance starts, and appends every request
// and connection to a JSON-lines file that the tests read back.
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createNetServer, type Socket } from 'node:net';
import { basename, join } from 'node:path';

export interface FakeFault {
  method: string;
  path: string;
  /** Default 400. */
  statusCode?: number;
  faultMessage: string;
}

export interface FakeBehavior {
  /** The JSON-lines file that receives every FakeEvent. */
  recordPath: string;
  /** Requests that get a fault response instead of being carried out. */
  faults?: FakeFault[];
  /** Requests that never get a response, to exercise timeouts. */
  hang?: { method: string; path: string }[];
  /** Exit with code 0 shortly after SendCtrlAltDel, as a guest booted with reboot=k does. */
  exitOnCtrlAltDel?: boolean;
  /** Keep running after SIGTERM, so that only SIGKILL ends the process. */
  ignoreSigterm?: boolean;
  /** Exit at once with this code, before the API socket exists. */
  exitAtStartCode?: number;
  /** Close this many vsock connections without an OK line, as while the guest boots. */
  vsockRejectFirst?: number;
  /** Guest bytes sent in the same write as the OK line. */
  vsockGreeting?: string;
  /** The jail root: absolute paths in requests resolve under it, as in a chroot. */
  chrootDir?: string;
}

export type FakeEvent =
  | { kind: 'argv'; argv: string[]; pid: number }
  | { kind: 'jailer'; argv: string[] }
  | {
      kind: 'request';
      method: string;
      path: string;
      body: unknown;
      statusCode: number;
      responseBody: unknown;
    }
  | { kind: 'vsock'; line: string; answered: boolean }
  | { kind: 'signal'; signal: string };

export const FAKE_HOST_PORT = 1234;

export function readEvents(recordPath: string): FakeEvent[] {
  if (!existsSync(recordPath)) return [];
  return readFileSync(recordPath, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as FakeEvent);
}

export function requestsOf(events: FakeEvent[]) {
  return events.flatMap((event) => (event.kind === 'request' ? [event] : []));
}

/**
 * Writes an executable named `name` into `dir` that runs this module's fake firecracker or
 * fake jailer with `behavior`, and returns its path.
 */
export async function writeFakeExecutable(
  dir: string,
  name: string,
  role: 'firecracker' | 'jailer',
  behavior: FakeBehavior,
): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, name);
  const entry = role === 'firecracker' ? 'runFakeFirecracker' : 'runFakeJailer';
  const script = [
    `#!${process.execPath}`,
    `import(${JSON.stringify(import.meta.url)})`,
    `  .then((fake) => fake.${entry}(process.argv.slice(2), ${JSON.stringify(behavior)}))`,
    '  .catch((error) => { console.error(error); process.exit(70); });',
    '',
  ].join('\n');
  await writeFile(path, script);
  await chmod(path, 0o755);
  return path;
}

interface VmState {
  bootSourceSet: boolean;
  configured: boolean;
  started: boolean;
  paused: boolean;
  vsockUdsPath: string | null;
  vsockRejectionsLeft: number;
}

/** Serves the fake API on `socketPath` and resolves once it listens. */
export async function startFakeApi(socketPath: string, behavior: FakeBehavior): Promise<Server> {
  const state: VmState = {
    bootSourceSet: false,
    configured: false,
    started: false,
    paused: false,
    vsockUdsPath: null,
    vsockRejectionsLeft: behavior.vsockRejectFirst ?? 0,
  };
  const inJail = (path: string) => (behavior.chrootDir ? join(behavior.chrootDir, path) : path);

  const server = createHttpServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const method = request.method ?? '';
      const path = request.url ?? '';
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      try {
        body = text === '' ? undefined : JSON.parse(text);
      } catch {
        body = text;
      }

      if (behavior.hang?.some((rule) => rule.method === method && rule.path === path)) {
        record(behavior, {
          kind: 'request',
          method,
          path,
          body,
          statusCode: 0,
          responseBody: null,
        });
        return;
      }

      const fault = behavior.faults?.find((rule) => rule.method === method && rule.path === path);
      const answer = fault
        ? { statusCode: fault.statusCode ?? 400, body: { fault_message: fault.faultMessage } }
        : handle(state, behavior, inJail, method, path, body);
      record(behavior, {
        kind: 'request',
        method,
        path,
        body,
        statusCode: answer.statusCode,
        responseBody: answer.body ?? null,
      });

      const send = () => {
        if (answer.body === undefined) {
          response.writeHead(answer.statusCode).end();
        } else {
          response
            .writeHead(answer.statusCode, { 'Content-Type': 'application/json' })
            .end(JSON.stringify(answer.body));
        }
        answer.after?.();
      };
      if (answer.ready) answer.ready.then(send, send);
      else send();
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  return server;
}

interface Answer {
  statusCode: number;
  body?: unknown;
  /** Delays the response until this settles. */
  ready?: Promise<unknown>;
  /** Runs after the response is sent. */
  after?: () => void;
}

const noContent: Answer = { statusCode: 204 };

function fault(message: string): Answer {
  return { statusCode: 400, body: { fault_message: message } };
}

function handle(
  state: VmState,
  behavior: FakeBehavior,
  inJail: (path: string) => string,
  method: string,
  path: string,
  body: unknown,
): Answer {
  const fields = (body ?? {}) as Record<string, unknown>;
  const route = `${method} ${path.replace(/^\/(drives|network-interfaces)\/[^/]+$/, '/$1/{id}')}`;
  const preBootOnly =
    method === 'PUT' && !path.startsWith('/actions') && path !== '/snapshot/create';
  if (preBootOnly && state.started) {
    return fault('The requested operation is not supported after starting the microVM.');
  }

  switch (route) {
    case 'GET /version':
      return { statusCode: 200, body: { firecracker_version: '1.17.0-fake' } };
    case 'PUT /machine-config':
      state.configured = true;
      return noContent;
    case 'PUT /boot-source':
      if (!existsSync(inJail(String(fields.kernel_image_path)))) {
        return fault(`Cannot open kernel image ${String(fields.kernel_image_path)}`);
      }
      state.bootSourceSet = true;
      state.configured = true;
      return noContent;
    case 'PUT /drives/{id}':
      if (`/drives/${String(fields.drive_id)}` !== path) {
        return fault('The id from the path does not match the id from the body!');
      }
      if (!existsSync(inJail(String(fields.path_on_host)))) {
        return fault(`Cannot open block device ${String(fields.path_on_host)}`);
      }
      state.configured = true;
      return noContent;
    case 'PUT /network-interfaces/{id}':
      state.configured = true;
      return noContent;
    case 'PUT /vsock':
      state.configured = true;
      state.vsockUdsPath = String(fields.uds_path);
      return { ...noContent, ready: serveVsock(inJail(state.vsockUdsPath), state, behavior) };
    case 'PUT /actions':
      return handleAction(state, behavior, String(fields.action_type));
    case 'PATCH /vm':
      if (!state.started) return fault('The microVM is not running.');
      state.paused = fields.state === 'Paused';
      return noContent;
    case 'PUT /snapshot/create': {
      if (!state.paused) return fault('Cannot create a snapshot: the microVM must be paused.');
      const snapshot = JSON.stringify({ vsock_uds_path: state.vsockUdsPath });
      writeFileSync(inJail(String(fields.snapshot_path)), snapshot);
      writeFileSync(inJail(String(fields.mem_file_path)), 'guest memory');
      return noContent;
    }
    case 'PUT /snapshot/load':
      return loadSnapshot(state, behavior, inJail, fields);
    default:
      return fault(`Invalid request method and/or path: ${method} ${path}.`);
  }
}

function handleAction(state: VmState, behavior: FakeBehavior, actionType: string): Answer {
  if (actionType === 'InstanceStart') {
    if (!state.bootSourceSet) return fault('Cannot start microvm without kernel configuration.');
    state.started = true;
    process.stdout.write('fake guest console: booted\n');
    return noContent;
  }
  if (actionType === 'SendCtrlAltDel') {
    if (!state.started) return fault('The microVM is not running.');
    const exit = behavior.exitOnCtrlAltDel
      ? () => setTimeout(() => process.exit(0), 20)
      : undefined;
    return { ...noContent, after: exit };
  }
  return noContent;
}

function loadSnapshot(
  state: VmState,
  behavior: FakeBehavior,
  inJail: (path: string) => string,
  fields: Record<string, unknown>,
): Answer {
  if (state.configured || state.started) {
    return fault('Loading a snapshot is only allowed before configuring the microVM.');
  }
  const statePath = inJail(String(fields.snapshot_path));
  const backend = fields.mem_backend as { backend_path?: string } | undefined;
  if (!existsSync(statePath) || !existsSync(inJail(String(backend?.backend_path)))) {
    return fault('Cannot open the snapshot files.');
  }
  const saved = JSON.parse(readFileSync(statePath, 'utf8')) as { vsock_uds_path: string };
  const override = fields.vsock_override as { uds_path?: string } | undefined;
  state.vsockUdsPath = override?.uds_path ?? saved.vsock_uds_path;
  state.started = true;
  state.paused = fields.resume_vm !== true;
  return { ...noContent, ready: serveVsock(inJail(state.vsockUdsPath), state, behavior) };
}

/** Serves the hybrid vsock handshake and then echoes, like a guest echo server on any port. */
function serveVsock(hostPath: string, state: VmState, behavior: FakeBehavior): Promise<void> {
  const server = createNetServer((socket: Socket) => {
    let received = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const newline = received.indexOf(0x0a);
      if (newline === -1) return;
      socket.off('data', onData);

      const line = received.subarray(0, newline).toString('utf8');
      const listening = state.started && !state.paused && /^CONNECT \d+$/.test(line);
      const answered = listening && state.vsockRejectionsLeft === 0;
      record(behavior, { kind: 'vsock', line, answered });
      if (!answered) {
        if (listening) state.vsockRejectionsLeft -= 1;
        socket.destroy();
        return;
      }

      socket.write(`OK ${FAKE_HOST_PORT}\n${behavior.vsockGreeting ?? ''}`);
      const rest = received.subarray(newline + 1);
      if (rest.length > 0) socket.write(rest);
      socket.on('data', (data: Buffer) => socket.write(data));
    };
    socket.on('data', onData);
    socket.on('error', () => socket.destroy());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(hostPath, () => resolve());
  });
}

function record(behavior: FakeBehavior, event: FakeEvent): void {
  appendFileSync(behavior.recordPath, `${JSON.stringify(event)}\n`);
}

function optionValue(argv: string[], name: string): string | undefined {
  const index = argv.indexOf(name);
  if (index !== -1) return argv[index + 1];
  const inline = argv.find((argument) => argument.startsWith(`${name}=`));
  return inline?.slice(name.length + 1);
}

/** The fake firecracker's main: serves the API on --api-sock until a signal or an exit. */
export async function runFakeFirecracker(argv: string[], behavior: FakeBehavior): Promise<void> {
  record(behavior, { kind: 'argv', argv, pid: process.pid });
  if (behavior.exitAtStartCode !== undefined) {
    process.stderr.write('fake firecracker: exiting at start as configured\n');
    process.exit(behavior.exitAtStartCode);
  }
  if (behavior.ignoreSigterm) {
    process.on('SIGTERM', () => record(behavior, { kind: 'signal', signal: 'SIGTERM' }));
  }

  const apiSocket = optionValue(argv, '--api-sock') ?? '/run/firecracker.socket';
  const socketPath = behavior.chrootDir ? join(behavior.chrootDir, apiSocket) : apiSocket;
  await startFakeApi(socketPath, behavior);
}

/**
 * The fake jailer's main: checks its arguments, creates the jail root, then runs the fake
 * firecracker in the same process with paths resolved under that root, as exec in a chroot.
 */
export async function runFakeJailer(argv: string[], behavior: FakeBehavior): Promise<void> {
  record(behavior, { kind: 'jailer', argv });
  const separator = argv.indexOf('--');
  const own = separator === -1 ? argv : argv.slice(0, separator);
  const forwarded = separator === -1 ? [] : argv.slice(separator + 1);

  const id = optionValue(own, '--id');
  const execFile = optionValue(own, '--exec-file');
  const uid = optionValue(own, '--uid');
  const gid = optionValue(own, '--gid');
  if (!id || !execFile || uid === undefined || gid === undefined) {
    process.stderr.write('fake jailer: --id, --exec-file, --uid and --gid are required\n');
    process.exit(64);
  }
  const chrootBase = optionValue(own, '--chroot-base-dir') ?? '/srv/jailer';
  const chrootDir = join(chrootBase, basename(execFile), id, 'root');
  mkdirSync(chrootDir, { recursive: true });

  await runFakeFirecracker([`--id=${id}`, ...forwarded], { ...behavior, chrootDir });
}
