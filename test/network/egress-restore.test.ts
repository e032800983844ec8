// Network sessions started from a snapshot or the warm pool, against real VMs. hearthd runs
// in a test network namespace with snapshots on (see egress-world.ts). Each restored VM
// must get its own TAP, address and MAC, and be held to its own session's policy.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { callApi } from '../../src/cli/client.js';
import { hearthHome } from '../../src/config.js';
import { findImages } from '../../src/image/index.js';
import { EgressWorld, WORLD } from '../helpers/egress-world.js';
import { CURL, probeGuest } from '../helpers/guest-probe.js';
import { createSession, execute } from '../helpers/hearthd.js';
import { testNamespaces } from '../helpers/netns.js';

interface StartedSession {
  id: string;
  start_path: string;
}

interface GuestIdentity {
  address: string;
  macAddress: string;
  tap: string;
}

const skipReason = (() => {
  if (process.getuid?.() !== 0) return 'needs root for network namespaces, TAPs and nftables';
  for (const tool of ['/usr/sbin/nft', '/usr/sbin/ip', '/usr/bin/openssl', '/usr/bin/curl']) {
    if (!existsSync(tool)) return `needs ${tool}`;
  }
  return null;
})();

// Memory of a shape that has no snapshot when its test starts; the default shape has 512.
const UNSNAPSHOTTED_MEMORY_MB = 384;

describe('egress with snapshot restore', { skip: skipReason ?? false }, () => {
  let world: EgressWorld;

  const probe = (session: string, commands: Record<string, string>) =>
    probeGuest(world.target, session, commands);

  async function start(body: Record<string, unknown>): Promise<StartedSession> {
    return (await createSession(world.target, {
      lifetime_seconds: 1800,
      ...body,
    })) as unknown as StartedSession;
  }

  const close = (id: string) => callApi(world.target, 'DELETE', `/v1/sessions/${id}`);

  /** Reads the guest's eth0 MAC and address, and names the host TAP of that address. */
  async function guestIdentity(session: string): Promise<GuestIdentity> {
    const result = await execute(world.target, session, {
      language: 'bash',
      code: "cat /sys/class/net/eth0/address; ip -4 -o addr show dev eth0 | awk '{print $4}'",
    });
    const [macAddress, cidr] = result.stdout.trim().split('\n');
    const address = cidr!.split('/')[0]!;
    // Slots are /30s of the test pool 100.96.0.0/24, so the last octet gives the TAP.
    const tap = `hearth${Math.floor(Number(address.split('.')[3]) / 4)}`;
    return { address, macAddress: macAddress!, tap };
  }

  /** Returns the MAC the host learned for a guest address on its TAP, or null. */
  async function hostNeighbourMac(identity: GuestIdentity): Promise<string | null> {
    const output = await world.host.must('ip', [
      'neigh',
      'show',
      identity.address,
      'dev',
      identity.tap,
    ]);
    return /lladdr (\S+)/.exec(output)?.[1] ?? null;
  }

  async function hearthTaps(): Promise<string[]> {
    const output = await world.host.must('ip', ['-br', 'link', 'show', 'type', 'tun']);
    return output
      .split('\n')
      .map((line) => line.split(' ')[0]!)
      .filter((name) => /^hearth\d+$/.test(name));
  }

  async function vmChains(): Promise<string[]> {
    const table = await world.host.must('nft', ['list', 'table', 'inet', 'hearth']);
    return [...table.matchAll(/chain (vm\d+_\w+)/g)].map((match) => match[1]!);
  }

  /**
   * Cuts the default shape's saved device state in half and records the new checksum, so
   * that the snapshot looks complete and QEMU fails only when it loads the state.
   */
  async function truncateDefaultSnapshot(): Promise<void> {
    const dir = join(world.home, 'snapshots');
    for (const entry of await readdir(dir)) {
      if (entry.startsWith('.build-')) continue;
      const metaPath = join(dir, entry, 'meta.json');
      const meta = JSON.parse(await readFile(metaPath, 'utf8')) as {
        shape: { memoryMib: number };
        stateSha256: string;
      };
      if (meta.shape.memoryMib !== 512) continue;
      const statePath = join(dir, entry, 'state');
      const state = await readFile(statePath);
      const half = state.subarray(0, Math.floor(state.length / 2));
      await writeFile(statePath, half);
      meta.stateSha256 = createHash('sha256').update(half).digest('hex');
      await writeFile(metaPath, JSON.stringify(meta));
      return;
    }
    throw new Error(`no snapshot of the default shape in ${dir}`);
  }

  before(async () => {
    if (!(await findImages(hearthHome()))) {
      throw new Error('No guest images for the current sources; run ./setup.sh first.');
    }
    world = await EgressWorld.create();
    await world.startHearthd({ snapshots: true, poolSize: 0 });
    // hearthd builds the default shape's snapshot at start.
    await world.waitForLogMessage('snapshot created', 1);
  });

  after(async () => {
    if (process.env.HEARTH_TEST_SHOW_LOG && world) console.log(await world.tailLog(200));
    await world?.close();
    assert.deepEqual(await testNamespaces(), [], 'every test namespace is gone');
  });

  it('restores sessions with their own address, MAC and policy', async () => {
    const byName = await start({ egress: { allow_domains: ['allowed.test'] } });
    const byCidr = await start({ egress: { allow_cidrs: [`${WORLD.otherWeb}/32`] } });
    assert.equal(byName.start_path, 'snapshot');
    assert.equal(byCidr.start_path, 'snapshot');

    const targets = {
      name: `${CURL} http://allowed.test/`,
      literal: `${CURL} http://${WORLD.otherWeb}/`,
      resolver: 'cat /etc/resolv.conf',
    };
    const nameResults = await probe(byName.id, targets);
    const cidrResults = await probe(byCidr.id, targets);
    assert.match(nameResults.name!.output, /served-by=198\.18\.0\.10 host=allowed\.test/);
    assert.equal(nameResults.literal!.rc, 7, nameResults.literal!.output);
    assert.equal(cidrResults.name!.rc, 6, `the name does not resolve: ${cidrResults.name!.output}`);
    assert.match(cidrResults.literal!.output, /served-by=198\.18\.0\.11/);

    const first = await guestIdentity(byName.id);
    const second = await guestIdentity(byCidr.id);
    assert.notEqual(first.address, second.address);
    assert.notEqual(first.macAddress, second.macAddress);
    for (const [identity, results] of [
      [first, nameResults],
      [second, cidrResults],
    ] as const) {
      const gateway = identity.address.replace(/\d+$/, (last) => String(Number(last) - 1));
      assert.equal(results.resolver!.output, `nameserver ${gateway}\n`);
      // The host reached the guest at the MAC the guest now has, so QEMU delivers frames
      // for the MAC the greeting set, not only for the template's.
      assert.equal(await hostNeighbourMac(identity), identity.macAddress);
    }
    await close(byName.id);
    await close(byCidr.id);
  });

  it('writes the package-manager files on restore', async () => {
    const session = await start({ egress: { allow_package_managers: true } });
    assert.equal(session.start_path, 'snapshot');
    const results = await probe(session.id, {
      config: 'cat /etc/pip.conf',
      index: `${CURL} -f ${WORLD.indexUrl}`,
      notInPreset: `${CURL} http://allowed.test/`,
    });
    assert.match(results.config!.output, /index-url = http:\/\/pypi\.test\/simple\//);
    assert.equal(results.index!.rc, 0, results.index!.output);
    assert.equal(results.notInPreset!.rc, 6, results.notInPreset!.output);
    await close(session.id);
  });

  it('boots a shape without a snapshot, then restores it', async () => {
    const egress = { allow_cidrs: [`${WORLD.allowedWeb}/32`] };
    const booted = await start({ egress, memory_mb: UNSNAPSHOTTED_MEMORY_MB });
    assert.equal(booted.start_path, 'boot');
    const bootedResults = await probe(booted.id, {
      allowed: `${CURL} http://${WORLD.allowedWeb}/`,
      denied: `${CURL} http://${WORLD.otherWeb}/`,
    });
    assert.match(bootedResults.allowed!.output, /served-by=198\.18\.0\.10/);
    assert.equal(bootedResults.denied!.rc, 7, bootedResults.denied!.output);
    await close(booted.id);

    // The boot made a snapshot of its shape in the background.
    await world.waitForLogMessage('snapshot created', 2);
    const restored = await start({ egress, memory_mb: UNSNAPSHOTTED_MEMORY_MB });
    assert.equal(restored.start_path, 'snapshot');
    const restoredResults = await probe(restored.id, {
      allowed: `${CURL} http://${WORLD.allowedWeb}/`,
    });
    assert.match(restoredResults.allowed!.output, /served-by=198\.18\.0\.10/);
    await close(restored.id);
  });

  it('falls back to a boot when a restore fails, leaking nothing', async () => {
    await truncateDefaultSnapshot();
    const failuresBefore = await world.countLogMessages(
      'snapshot failed to restore; deleting it so it is rebuilt',
    );
    const createdBefore = await world.countLogMessages('snapshot created');

    const session = await start({ egress: { allow_domains: ['allowed.test'] } });
    assert.equal(session.start_path, 'boot');
    assert.equal(
      await world.countLogMessages('snapshot failed to restore; deleting it so it is rebuilt'),
      failuresBefore + 1,
      'the corrupted snapshot was tried first',
    );
    const results = await probe(session.id, {
      allowed: `${CURL} http://allowed.test/`,
      denied: `${CURL} http://${WORLD.otherWeb}/`,
    });
    assert.match(results.allowed!.output, /served-by=198\.18\.0\.10 host=allowed\.test/);
    assert.equal(results.denied!.rc, 7, results.denied!.output);

    // Once the rebuild's template is gone too, only the live session has a TAP and rules.
    await world.waitForLogMessage('snapshot created', createdBefore + 1);
    const identity = await guestIdentity(session.id);
    assert.deepEqual(await hearthTaps(), [identity.tap]);
    const slot = identity.tap.replace('hearth', '');
    const chains = await vmChains();
    assert.ok(chains.length > 0, 'the live session has its chains');
    assert.deepEqual(
      chains.filter((chain) => !chain.startsWith(`vm${slot}_`)),
      [],
      'no chains of the failed restore are left',
    );
    await close(session.id);
    assert.deepEqual(await hearthTaps(), [], 'a closed session leaves no TAP');
    assert.deepEqual(await vmChains(), [], 'a closed session leaves no chains');
  });

  it('hands a pool VM to a session with its own policy', async () => {
    const readyBefore = await world.countLogMessages('pool VM ready');
    await world.stopHearthd('SIGTERM');
    await world.restartHearthd({ snapshots: true, poolSize: 1 });
    await world.waitForLogMessage('pool VM ready', readyBefore + 1);

    const session = await start({ egress: { allow_domains: ['allowed.test'] } });
    assert.equal(session.start_path, 'pool');
    const info = (await callApi(world.target, 'GET', `/v1/sessions/${session.id}`)) as {
      egress: unknown;
    };
    assert.deepEqual(info.egress, {
      allow_domains: ['allowed.test'],
      allow_cidrs: [],
      allow_package_managers: false,
    });
    const results = await probe(session.id, {
      allowed: `${CURL} http://allowed.test/`,
      otherName: `${CURL} http://other.test/`,
      literal: `${CURL} http://${WORLD.otherWeb}/`,
    });
    assert.match(results.allowed!.output, /served-by=198\.18\.0\.10 host=allowed\.test/);
    assert.equal(results.otherName!.rc, 6, results.otherName!.output);
    assert.equal(results.literal!.rc, 7, results.literal!.output);
    const identity = await guestIdentity(session.id);
    assert.equal(await hostNeighbourMac(identity), identity.macAddress);

    await world.stopHearthd('SIGTERM');
    assert.deepEqual(await hearthTaps(), [], 'shutdown removes the idle pool VM TAP too');
    const table = await world.host.exec('nft', ['list', 'table', 'inet', 'hearth']);
    assert.notEqual(table.code, 0, 'a clean shutdown deletes the table');
  });
});
