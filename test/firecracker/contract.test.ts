// Drives the Firecracker driver against a fake firecracker process and checks every request
// it sends against Firecracker's published API description.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';

import {
  FirecrackerApiClient,
  type TransportRequest,
} from '../../src/vmm/firecracker/api-client.js';
import {
  FirecrackerDriver,
  firecrackerBootArgs,
  type FirecrackerDriverOptions,
  type FirecrackerVmSpec,
} from '../../src/vmm/firecracker/driver.js';
import { FirecrackerApiError, FirecrackerError } from '../../src/vmm/firecracker/errors.js';
import type { FirecrackerVm } from '../../src/vmm/firecracker/vm.js';
import {
  readEvents,
  requestsOf,
  writeFakeExecutable,
  type FakeBehavior,
  type FakeEvent,
} from './fake-firecracker.js';
import { requireSpec } from './spec-location.js';
import { readExactly } from './streams.js';
import { validateRequest, validateResponse, type SwaggerSpec } from './swagger-validator.js';

type Request = ReturnType<typeof requestsOf>[number];

interface World {
  dir: string;
  spec: FirecrackerVmSpec;
  firecrackerPath: string;
  recordPath: string;
  events(): FakeEvent[];
  requests(): Request[];
  driver(options?: FirecrackerDriverOptions): FirecrackerDriver;
}

/** Creates a temp dir with dummy images and a fake firecracker configured with `behavior`. */
async function makeWorld(
  t: TestContext,
  behavior: Omit<FakeBehavior, 'recordPath'> = {},
): Promise<World> {
  const dir = await mkdtemp(join(tmpdir(), 'hearth-fc-'));
  t.after(() => rm(dir, { recursive: true, force: true }));

  const images = join(dir, 'images');
  await mkdir(images);
  const spec: FirecrackerVmSpec = {
    vmId: 'vm-1',
    kernelPath: join(images, 'vmlinux'),
    rootfsPath: join(images, 'rootfs.ext4'),
    scratchPath: join(images, 'scratch.ext4'),
    cpuCount: 2,
    memoryMib: 256,
    runDir: join(dir, 'run'),
  };
  await writeFile(spec.kernelPath, 'kernel');
  await writeFile(spec.rootfsPath, 'base image');
  await writeFile(spec.scratchPath, 'scratch disk');

  const recordPath = join(dir, 'events.jsonl');
  const firecrackerPath = await writeFakeExecutable(
    join(dir, 'bin'),
    'firecracker',
    'firecracker',
    {
      recordPath,
      ...behavior,
    },
  );
  return {
    dir,
    spec,
    firecrackerPath,
    recordPath,
    events: () => readEvents(recordPath),
    requests: () => requestsOf(readEvents(recordPath)),
    driver: (options = {}) =>
      new FirecrackerDriver({ firecrackerPath, apiSocketTimeoutMs: 5_000, ...options }),
  };
}

async function startVm(t: TestContext, world: World, options?: FirecrackerDriverOptions) {
  const vm = await world.driver(options).start(world.spec);
  t.after(() => vm.stop(50));
  return vm;
}

function routes(requests: Request[]): string[] {
  return requests.map((request) => `${request.method} ${request.path}`);
}

/** Asserts that each request and the fake's response to it fit the spec. */
function assertConforms(spec: SwaggerSpec, requests: Request[]): void {
  assert.ok(requests.length > 0, 'no requests were recorded');
  for (const request of requests) {
    assert.deepEqual(validateRequest(spec, request), [], `${request.method} ${request.path}`);
    const responseBody = request.responseBody === null ? undefined : request.responseBody;
    assert.deepEqual(
      validateResponse(spec, request, request.statusCode, responseBody),
      [],
      `answer to ${request.method} ${request.path}`,
    );
  }
}

async function assertEchoes(vm: FirecrackerVm, text: string): Promise<void> {
  vm.channel.write(text);
  const echoed = await readExactly(vm.channel, Buffer.byteLength(text));
  assert.equal(echoed.toString(), text);
}

function bodyOf(requests: Request[], method: string, path: string): Record<string, unknown> {
  const request = requests.find((item) => item.method === method && item.path === path);
  assert.ok(request, `no ${method} ${path} was sent`);
  return request.body as Record<string, unknown>;
}

test('boot sequence follows the spec', async (t) => {
  const spec = requireSpec(t);
  if (!spec) return;
  const world = await makeWorld(t, { exitOnCtrlAltDel: true });

  const vm = await startVm(t, world);
  await vm.stop();

  const requests = world.requests();
  assert.deepEqual(routes(requests), [
    'GET /version',
    'PUT /machine-config',
    'PUT /boot-source',
    'PUT /drives/rootfs',
    'PUT /drives/scratch',
    'PUT /vsock',
    'PUT /actions',
    'PUT /actions',
  ]);
  assertConforms(spec, requests);

  assert.deepEqual(bodyOf(requests, 'PUT', '/machine-config'), {
    vcpu_count: 2,
    mem_size_mib: 256,
  });
  const bootSource = bodyOf(requests, 'PUT', '/boot-source');
  assert.equal(bootSource.kernel_image_path, world.spec.kernelPath);
  assert.equal(bootSource.boot_args, firecrackerBootArgs());
  assert.deepEqual(bodyOf(requests, 'PUT', '/drives/rootfs'), {
    drive_id: 'rootfs',
    path_on_host: world.spec.rootfsPath,
    is_root_device: true,
    is_read_only: true,
  });
  assert.deepEqual(bodyOf(requests, 'PUT', '/drives/scratch'), {
    drive_id: 'scratch',
    path_on_host: world.spec.scratchPath,
    is_root_device: false,
    is_read_only: false,
  });
  assert.deepEqual(bodyOf(requests, 'PUT', '/vsock'), {
    guest_cid: 3,
    uds_path: join(world.spec.runDir, 'vsock.sock'),
  });
  assert.deepEqual(requests[6]?.body, { action_type: 'InstanceStart' });
  assert.deepEqual(requests[7]?.body, { action_type: 'SendCtrlAltDel' });

  const argv = world.events().find((event) => event.kind === 'argv');
  assert.deepEqual(argv?.kind === 'argv' && argv.argv, [
    '--api-sock',
    join(world.spec.runDir, 'firecracker.sock'),
  ]);
});

test('boot args select the vsock agent channel', () => {
  const args = firecrackerBootArgs().split(' ');

  assert.ok(args.includes('console=ttyS0'), 'the console log needs the serial console');
  assert.ok(args.includes('reboot=k'), 'Firecracker exits only on an i8042 reset');
  assert.ok(args.includes('pci=off'));
  assert.ok(args.includes('root=/dev/vda'));
  assert.ok(args.includes('init=/usr/lib/hearth/init'));
  assert.ok(args.includes('hearth.channel=vsock:1024'));
  assert.ok(firecrackerBootArgs(2000).split(' ').includes('hearth.channel=vsock:2000'));
});

test('TAP device becomes eth0', async (t) => {
  const spec = requireSpec(t);
  if (!spec) return;
  const world = await makeWorld(t);

  await startVm(t, world);
  const withTap = await makeWorld(t);
  await startVm(t, {
    ...withTap,
    spec: { ...withTap.spec, tapDevice: 'hearth-tap0', guestMac: '06:00:ac:10:00:02' },
  });

  const requests = withTap.requests();
  assertConforms(spec, requests);
  assert.deepEqual(bodyOf(requests, 'PUT', '/network-interfaces/eth0'), {
    iface_id: 'eth0',
    host_dev_name: 'hearth-tap0',
    guest_mac: '06:00:ac:10:00:02',
  });
  assert.ok(!routes(world.requests()).some((route) => route.includes('/network-interfaces/')));
  assert.ok(
    routes(requests).indexOf('PUT /network-interfaces/eth0') <
      routes(requests).indexOf('PUT /actions'),
    'the network interface must be configured before InstanceStart',
  );
});

test('channel starts after the OK line', async (t) => {
  const world = await makeWorld(t, { vsockGreeting: 'guest bytes' });

  const vm = await startVm(t, world);

  const first = await readExactly(vm.channel, 'guest bytes'.length);
  assert.equal(first.toString(), 'guest bytes');
  await assertEchoes(vm, 'ping through the agent channel');
  assert.equal(vm.accelerator, 'kvm');
  assert.equal(vm.vmId, 'vm-1');
});

test('vsock handshake retries until the guest listens', async (t) => {
  const world = await makeWorld(t, { vsockRejectFirst: 3 });

  const vm = await startVm(t, world);

  const attempts = world.events().flatMap((event) => (event.kind === 'vsock' ? [event] : []));
  assert.deepEqual(
    attempts.map((attempt) => attempt.answered),
    [false, false, false, true],
  );
  assert.ok(attempts.every((attempt) => attempt.line === 'CONNECT 1024'));
  await assertEchoes(vm, 'after retries');
});

test('agent port option changes CONNECT and boot args', async (t) => {
  const world = await makeWorld(t);

  await startVm(t, world, { agentPort: 5000 });

  const attempt = world.events().find((event) => event.kind === 'vsock');
  assert.equal(attempt?.kind === 'vsock' && attempt.line, 'CONNECT 5000');
  const bootArgs = String(bodyOf(world.requests(), 'PUT', '/boot-source').boot_args);
  assert.ok(bootArgs.split(' ').includes('hearth.channel=vsock:5000'));
});

test('console output goes to firecracker.log', async (t) => {
  const world = await makeWorld(t, { exitOnCtrlAltDel: true });

  const vm = await startVm(t, world);
  await vm.stop();

  const log = readFileSync(join(world.spec.runDir, 'firecracker.log'), 'utf8');
  assert.match(log, /fake guest console: booted/);
});

test('stop resets the guest and removes sockets', async (t) => {
  const spec = requireSpec(t);
  if (!spec) return;
  const world = await makeWorld(t, { exitOnCtrlAltDel: true });
  const vm = await startVm(t, world);

  const exit = await vm.stop();

  assert.deepEqual(exit, { code: 0, signal: null });
  assert.deepEqual(await vm.exited, exit);
  assert.deepEqual(await vm.stop(), exit, 'a second stop returns the same exit');
  assert.equal(existsSync(join(world.spec.runDir, 'firecracker.sock')), false);
  assert.equal(existsSync(join(world.spec.runDir, 'vsock.sock')), false);
  assert.equal(vm.channel.destroyed, true);
  const last = world.requests().at(-1);
  assert.deepEqual(last?.body, { action_type: 'SendCtrlAltDel' });
  assertConforms(spec, world.requests());
});

test('stop escalates to SIGKILL', async (t) => {
  const world = await makeWorld(t, { exitOnCtrlAltDel: false, ignoreSigterm: true });
  const vm = await startVm(t, world);

  const started = Date.now();
  const exit = await vm.stop(100);

  assert.deepEqual(exit, { code: null, signal: 'SIGKILL' });
  assert.ok(Date.now() - started < 5_000, 'stop took too long');
  assert.ok(
    world.events().some((event) => event.kind === 'signal' && event.signal === 'SIGTERM'),
    'SIGTERM must come before SIGKILL',
  );
  assert.equal(existsSync(join(world.spec.runDir, 'firecracker.sock')), false);
});

test('stop of a paused VM skips Ctrl+Alt+Del', async (t) => {
  const world = await makeWorld(t);
  const vm = await startVm(t, world);
  await vm.pause();

  const exit = await vm.stop(5_000);

  assert.equal(exit.signal, 'SIGTERM');
  const actions = world.requests().filter((request) => request.path === '/actions');
  assert.deepEqual(
    actions.map((request) => request.body),
    [{ action_type: 'InstanceStart' }],
  );
});

test('snapshot sequence follows the spec', async (t) => {
  const spec = requireSpec(t);
  if (!spec) return;
  const world = await makeWorld(t, { exitOnCtrlAltDel: true });
  const driver = world.driver();
  const snapshotDir = join(world.dir, 'snapshots');

  const vm = await driver.start(world.spec);
  t.after(() => vm.stop(50));
  await vm.pause();
  const snapshot = await vm.createSnapshot(snapshotDir, 'base');
  await vm.resume();
  await vm.stop();
  const restoredSpec = { ...world.spec, vmId: 'vm-2', runDir: join(world.dir, 'run-2') };
  const restored = await driver.restore(restoredSpec, snapshot);
  t.after(() => restored.stop(50));
  await assertEchoes(restored, 'restored');
  await restored.stop();

  assert.deepEqual(snapshot, {
    statePath: join(snapshotDir, 'base.state'),
    memoryPath: join(snapshotDir, 'base.mem'),
    vsockUdsPath: join(world.spec.runDir, 'vsock.sock'),
  });
  assert.ok(existsSync(snapshot.statePath));
  assert.ok(existsSync(snapshot.memoryPath));

  const requests = world.requests();
  assertConforms(spec, requests);
  assert.deepEqual(routes(requests).slice(7), [
    'PATCH /vm',
    'PUT /snapshot/create',
    'PATCH /vm',
    'PUT /actions',
    'GET /version',
    'PUT /snapshot/load',
    'PUT /actions',
  ]);
  assert.deepEqual(requests[7]?.body, { state: 'Paused' });
  const create = requests[8]?.body as Record<string, unknown>;
  assert.match(String(create.snapshot_path), /\/snapshots\/\.base\.state\.[0-9a-f]{12}$/);
  assert.match(String(create.mem_file_path), /\/snapshots\/\.base\.mem\.[0-9a-f]{12}$/);
  assert.equal(create.snapshot_type, 'Full');
  assert.deepEqual(readdirSync(snapshotDir).sort(), ['base.mem', 'base.state']);
  assert.deepEqual(requests[9]?.body, { state: 'Resumed' });
  assert.deepEqual(requests[12]?.body, {
    snapshot_path: snapshot.statePath,
    mem_backend: { backend_type: 'File', backend_path: snapshot.memoryPath },
    resume_vm: true,
    vsock_override: { uds_path: join(restoredSpec.runDir, 'vsock.sock') },
  });
});

test('snapshot of a running VM is an API error', async (t) => {
  const world = await makeWorld(t);
  const vm = await startVm(t, world);

  await assert.rejects(vm.createSnapshot(join(world.dir, 'snapshots')), (error: unknown) => {
    assert.ok(error instanceof FirecrackerApiError);
    assert.equal(error.path, '/snapshot/create');
    assert.match(error.faultMessage, /paused/);
    return true;
  });
  await assert.rejects(vm.createSnapshot(world.dir, '../escape'), TypeError);
});

test('snapshot replaces files by rename', async (t) => {
  const world = await makeWorld(t);
  const driver = world.driver();
  const snapshotDir = join(world.dir, 'snapshots');
  const vm = await driver.start(world.spec);
  t.after(() => vm.stop(50));
  await vm.pause();
  const first = await vm.createSnapshot(snapshotDir);
  const firstMemoryInode = statSync(first.memoryPath).ino;
  await vm.stop(50);

  const restored = await driver.restore(
    { ...world.spec, vmId: 'vm-2', runDir: join(world.dir, 'run-2') },
    first,
  );
  t.after(() => restored.stop(50));
  await restored.pause();
  const second = await restored.createSnapshot(snapshotDir);

  assert.equal(second.memoryPath, first.memoryPath);
  assert.notEqual(
    statSync(second.memoryPath).ino,
    firstMemoryInode,
    'the memory file the restored VM maps must not be written in place',
  );
  assert.deepEqual(readdirSync(snapshotDir).sort(), ['snapshot.mem', 'snapshot.state']);
});

test('restore network override names the TAP', async (t) => {
  const spec = requireSpec(t);
  if (!spec) return;
  const world = await makeWorld(t);
  const driver = world.driver();
  const vm = await driver.start({ ...world.spec, tapDevice: 'tap-a' });
  t.after(() => vm.stop(50));
  await vm.pause();
  const snapshot = await vm.createSnapshot(join(world.dir, 'snapshots'));

  const restored = await driver.restore(
    { ...world.spec, vmId: 'vm-2', runDir: join(world.dir, 'run-2'), tapDevice: 'tap-b' },
    snapshot,
  );
  t.after(() => restored.stop(50));

  const load = bodyOf(world.requests(), 'PUT', '/snapshot/load');
  assert.deepEqual(load.network_overrides, [{ iface_id: 'eth0', host_dev_name: 'tap-b' }]);
  assertConforms(spec, world.requests());
});

async function makeJailedWorld(t: TestContext, behavior: Omit<FakeBehavior, 'recordPath'> = {}) {
  const world = await makeWorld(t, behavior);
  const jailerPath = await writeFakeExecutable(join(world.dir, 'bin'), 'jailer', 'jailer', {
    recordPath: world.recordPath,
    ...behavior,
  });
  const jailer = {
    jailerPath,
    uid: process.getuid?.() ?? 0,
    gid: process.getgid?.() ?? 0,
    cgroupVersion: 2 as const,
    cgroups: ['cpu.weight=50'],
  };
  return { ...world, jailer, driver: () => world.driver({ jailer }) };
}

test('jailer launch links files into the chroot', async (t) => {
  const spec = requireSpec(t);
  if (!spec) return;
  const world = await makeJailedWorld(t, { exitOnCtrlAltDel: true });
  const jailDir = join(world.spec.runDir, 'jail', 'firecracker', 'vm-1');
  const jailRoot = join(jailDir, 'root');

  const vm = await world.driver().start(world.spec);
  t.after(() => vm.stop(50));

  const linked = [
    ['vmlinux', world.spec.kernelPath],
    ['rootfs.ext4', world.spec.rootfsPath],
    ['scratch.ext4', world.spec.scratchPath],
  ];
  for (const [name, original] of linked) {
    assert.equal(statSync(join(jailRoot, name!)).ino, statSync(original!).ino, `${name} is linked`);
  }
  await assertEchoes(vm, 'jailed');
  await vm.stop();

  const events = world.events();
  const jailerArgv = events.find((event) => event.kind === 'jailer');
  assert.deepEqual(jailerArgv?.kind === 'jailer' && jailerArgv.argv, [
    '--id',
    'vm-1',
    '--exec-file',
    world.firecrackerPath,
    '--uid',
    String(world.jailer.uid),
    '--gid',
    String(world.jailer.gid),
    '--chroot-base-dir',
    join(world.spec.runDir, 'jail'),
    '--cgroup-version',
    '2',
    '--cgroup',
    'cpu.weight=50',
    '--',
    '--api-sock',
    '/firecracker.sock',
  ]);
  const requests = world.requests();
  assertConforms(spec, requests);
  assert.equal(bodyOf(requests, 'PUT', '/boot-source').kernel_image_path, '/vmlinux');
  assert.equal(bodyOf(requests, 'PUT', '/drives/rootfs').path_on_host, '/rootfs.ext4');
  assert.equal(bodyOf(requests, 'PUT', '/drives/scratch').path_on_host, '/scratch.ext4');
  assert.equal(bodyOf(requests, 'PUT', '/vsock').uds_path, '/vsock.sock');
  assert.equal(existsSync(jailDir), false, 'stop removes the jail');
  assert.ok(existsSync(world.spec.scratchPath), 'stop keeps the original scratch disk');
});

test('jailed snapshot leaves the jail', async (t) => {
  const spec = requireSpec(t);
  if (!spec) return;
  const world = await makeJailedWorld(t, { exitOnCtrlAltDel: true });
  const driver = world.driver();
  const snapshotDir = join(world.dir, 'snapshots');

  const vm = await driver.start(world.spec);
  t.after(() => vm.stop(50));
  await vm.pause();
  const snapshot = await vm.createSnapshot(snapshotDir);
  await vm.stop();
  const restored = await driver.restore({ ...world.spec, vmId: 'vm-2' }, snapshot);
  t.after(() => restored.stop(50));
  await assertEchoes(restored, 'restored in a jail');

  assert.equal(snapshot.statePath, join(snapshotDir, 'snapshot.state'));
  assert.ok(existsSync(snapshot.statePath));
  assert.ok(existsSync(snapshot.memoryPath));
  assert.equal(snapshot.vsockUdsPath, '/vsock.sock');
  const requests = world.requests();
  assertConforms(spec, requests);
  const createPath = String(bodyOf(requests, 'PUT', '/snapshot/create').snapshot_path);
  assert.match(createPath, /^\/snapshot-work\/\.snapshot\.state\.[0-9a-f]{12}$/);
  assert.deepEqual(readdirSync(snapshotDir).sort(), ['snapshot.mem', 'snapshot.state']);
  assert.deepEqual(bodyOf(requests, 'PUT', '/snapshot/load'), {
    snapshot_path: '/snapshot.state',
    mem_backend: { backend_type: 'File', backend_path: '/snapshot.mem' },
    resume_vm: true,
  });
});

test('jailer rejects a VM id it cannot take', async (t) => {
  const world = await makeJailedWorld(t);

  await assert.rejects(world.driver().start({ ...world.spec, vmId: 'vm_1' }), {
    code: 'firecracker_invalid_config',
  });
  assert.deepEqual(world.events(), []);
});

test('API fault fails the start and cleans up', async (t) => {
  const spec = requireSpec(t);
  if (!spec) return;
  const world = await makeWorld(t, {
    faults: [{ method: 'PUT', path: '/boot-source', faultMessage: 'Invalid kernel image.' }],
  });

  await assert.rejects(world.driver().start(world.spec), (error: unknown) => {
    assert.ok(error instanceof FirecrackerApiError);
    assert.equal(error.code, 'firecracker_api_error');
    assert.equal(error.method, 'PUT');
    assert.equal(error.path, '/boot-source');
    assert.equal(error.statusCode, 400);
    assert.equal(error.faultMessage, 'Invalid kernel image.');
    assert.match(error.message, /PUT \/boot-source.*400.*Invalid kernel image\./);
    return true;
  });

  const requests = world.requests();
  assert.equal(routes(requests).at(-1), 'PUT /boot-source', 'nothing is sent after the fault');
  assertConforms(spec, requests);
  const argv = world.events().find((event) => event.kind === 'argv');
  assert.ok(argv?.kind === 'argv');
  assert.throws(() => process.kill(argv.pid, 0), { code: 'ESRCH' }, 'the process is gone');
  assert.equal(existsSync(join(world.spec.runDir, 'firecracker.sock')), false);
  assert.equal(existsSync(join(world.spec.runDir, 'vsock.sock')), false);
});

test('exit during start is firecracker_exited', async (t) => {
  const world = await makeWorld(t, { exitAtStartCode: 3 });

  await assert.rejects(world.driver().start(world.spec), (error: unknown) => {
    assert.ok(error instanceof FirecrackerError);
    assert.equal(error.code, 'firecracker_exited');
    assert.match(error.message, /code 3/);
    assert.ok(error.message.includes(join(world.spec.runDir, 'firecracker.log')));
    return true;
  });
  const log = readFileSync(join(world.spec.runDir, 'firecracker.log'), 'utf8');
  assert.match(log, /exiting at start/);
});

test('missing binary is firecracker_spawn_failed', async (t) => {
  const world = await makeWorld(t);
  const driver = world.driver({ firecrackerPath: join(world.dir, 'missing', 'firecracker') });

  await assert.rejects(driver.start(world.spec), { code: 'firecracker_spawn_failed' });
});

test('silent API fails the start with firecracker_timeout', async (t) => {
  const world = await makeWorld(t, { hang: [{ method: 'GET', path: '/version' }] });

  await assert.rejects(world.driver({ apiSocketTimeoutMs: 300 }).start(world.spec), {
    code: 'firecracker_timeout',
  });
});

test('guest that never listens fails the boot', async (t) => {
  const world = await makeWorld(t, { vsockRejectFirst: 1_000_000 });

  await assert.rejects(world.driver({ bootTimeoutMs: 300 }).start(world.spec), (error: unknown) => {
    assert.ok(error instanceof FirecrackerError);
    assert.equal(error.code, 'firecracker_timeout');
    assert.match(error.message, /port 1024/);
    return true;
  });
  assert.equal(existsSync(join(world.spec.runDir, 'vsock.sock')), false);
});

test('invalid spec is rejected before spawning', async (t) => {
  const world = await makeWorld(t);
  const driver = world.driver();

  await assert.rejects(driver.start({ ...world.spec, cpuCount: 0 }), {
    code: 'firecracker_invalid_config',
  });
  await assert.rejects(driver.start({ ...world.spec, cpuCount: 33 }), {
    code: 'firecracker_invalid_config',
  });
  await assert.rejects(driver.start({ ...world.spec, memoryMib: 1.5 }), {
    code: 'firecracker_invalid_config',
  });
  await assert.rejects(driver.start({ ...world.spec, runDir: join(world.dir, 'x'.repeat(120)) }), {
    code: 'firecracker_invalid_config',
  });
  assert.deepEqual(world.events(), []);
});

test('client methods send requests the spec accepts', async (t) => {
  const spec = requireSpec(t);
  if (!spec) return;
  const sent: TransportRequest[] = [];
  const client = new FirecrackerApiClient({
    transport: async (request) => {
      sent.push(request);
      return request.path === '/version'
        ? { statusCode: 200, body: '{"firecracker_version":"1.17.0"}' }
        : { statusCode: 204, body: '' };
    },
  });

  assert.deepEqual(await client.getVersion(), { firecracker_version: '1.17.0' });
  await client.putMachineConfig({ vcpu_count: 1, mem_size_mib: 128, smt: false });
  await client.putBootSource({ kernel_image_path: '/vmlinux', boot_args: 'console=ttyS0' });
  await client.putDrive({
    drive_id: 'rootfs',
    path_on_host: '/rootfs.ext4',
    is_root_device: true,
    is_read_only: true,
    rate_limiter: { bandwidth: { size: 1_000_000, refill_time: 100 } },
  });
  await client.patchDrive({ drive_id: 'scratch', path_on_host: '/other.ext4' });
  await client.putNetworkInterface({ iface_id: 'eth0', host_dev_name: 'tap0', mtu: 1500 });
  await client.putVsock({ guest_cid: 3, uds_path: '/vsock.sock' });
  await client.putLogger({ log_path: '/firecracker.log', level: 'Warning', show_level: true });
  await client.createSyncAction('InstanceStart');
  await client.createSyncAction('SendCtrlAltDel');
  await client.patchVmState('Paused');
  await client.createSnapshot({ snapshot_path: '/s', mem_file_path: '/m', snapshot_type: 'Full' });
  await client.loadSnapshot({
    snapshot_path: '/s',
    mem_backend: { backend_type: 'File', backend_path: '/m' },
    resume_vm: true,
    vsock_override: { uds_path: '/vsock-2.sock' },
    network_overrides: [{ iface_id: 'eth0', host_dev_name: 'tap1' }],
  });

  assert.equal(sent.length, 13);
  for (const request of sent) {
    const body = request.body === undefined ? undefined : (JSON.parse(request.body) as unknown);
    const errors = validateRequest(spec, { method: request.method, path: request.path, body });
    assert.deepEqual(errors, [], `${request.method} ${request.path}`);
    assert.ok(request.timeoutMs > 0, `${request.method} ${request.path} has a timeout`);
  }
});

test('validator rejects bodies that break the spec', (t) => {
  const spec = requireSpec(t);
  if (!spec) return;
  const drive = {
    drive_id: 'rootfs',
    path_on_host: '/r',
    is_root_device: true,
    is_read_only: true,
  };
  const cases: { name: string; method: string; path: string; body: unknown; error: RegExp }[] = [
    {
      name: 'vcpu_count as a string',
      method: 'PUT',
      path: '/machine-config',
      body: { vcpu_count: '2', mem_size_mib: 256 },
      error: /vcpu_count: expected integer/,
    },
    {
      name: 'vcpu_count above the maximum',
      method: 'PUT',
      path: '/machine-config',
      body: { vcpu_count: 33, mem_size_mib: 256 },
      error: /above the maximum 32/,
    },
    {
      name: 'missing required field',
      method: 'PUT',
      path: '/machine-config',
      body: { vcpu_count: 2 },
      error: /"mem_size_mib" is missing/,
    },
    {
      name: 'unknown field',
      method: 'PUT',
      path: '/boot-source',
      body: { kernel_image_path: '/k', kernel_args: 'x' },
      error: /"kernel_args" is not in the schema/,
    },
    {
      name: 'action outside the enum',
      method: 'PUT',
      path: '/actions',
      body: { action_type: 'Reboot' },
      error: /"Reboot" is not one of/,
    },
    {
      name: 'guest_cid below the minimum',
      method: 'PUT',
      path: '/vsock',
      body: { guest_cid: 2, uds_path: '/v' },
      error: /below the minimum 3/,
    },
    {
      name: 'nested $ref field of the wrong type',
      method: 'PUT',
      path: '/drives/rootfs',
      body: { ...drive, rate_limiter: { ops: { size: 'ten', refill_time: 1 } } },
      error: /rate_limiter\.ops\.size: expected integer/,
    },
    {
      name: 'array item of the wrong shape',
      method: 'PUT',
      path: '/snapshot/load',
      body: { snapshot_path: '/s', network_overrides: [{ iface_id: 'eth0' }] },
      error: /network_overrides\[0\].*"host_dev_name" is missing/,
    },
    {
      name: 'body that is not an object',
      method: 'PATCH',
      path: '/vm',
      body: 'Paused',
      error: /expected object/,
    },
    {
      name: 'missing required body',
      method: 'PUT',
      path: '/vsock',
      body: undefined,
      error: /required body is missing/,
    },
    {
      name: 'path not in the spec',
      method: 'PUT',
      path: '/drive/rootfs',
      body: drive,
      error: /matches no path/,
    },
    {
      name: 'method not in the spec',
      method: 'DELETE',
      path: '/drives/rootfs',
      body: undefined,
      error: /has no DELETE operation/,
    },
  ];

  for (const item of cases) {
    const errors = validateRequest(spec, item);
    assert.ok(errors.length > 0, `${item.name}: the validator accepted it`);
    assert.match(errors.join('\n'), item.error, item.name);
  }
  assert.deepEqual(
    validateRequest(spec, { method: 'PUT', path: '/drives/rootfs', body: drive }),
    [],
  );
  assert.deepEqual(
    validateResponse(spec, { method: 'PUT', path: '/vsock' }, 400, { fault_message: 'bad' }),
    [],
  );
  assert.match(
    validateResponse(spec, { method: 'PUT', path: '/vsock' }, 400, { fault_message: 7 }).join(),
    /fault_message: expected string/,
  );
});
