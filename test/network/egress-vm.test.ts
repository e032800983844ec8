// Egress policy against real VMs: hearthd runs in a test network namespace, the guests try
// to reach the servers of a closed test world (see egress-world.ts), and each test checks
// what got through. Every denial has a control showing the same target replies when the
// policy is not in the way, so a test cannot pass because the world was broken.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { callApi } from '../../src/cli/client.js';
import { hearthHome } from '../../src/config.js';
import { HearthError } from '../../src/errors.js';
import { findImages } from '../../src/image/index.js';
import { EgressWorld, WORLD } from '../helpers/egress-world.js';
import { CURL, probeGuest } from '../helpers/guest-probe.js';
import { createSession, execute, qemuProcessesUnder } from '../helpers/hearthd.js';
import { testNamespaces } from '../helpers/netns.js';
import { WORLD_PACKAGE } from '../helpers/world-server.js';

/**
 * Returns a Python script that sends one DNS query for allowed.test to `server` and prints
 * "answer" or "timeout". The guest has no dig.
 */
function dnsProbeScript(server: string): string {
  return [
    'import socket',
    "q = bytes.fromhex('abcd01000001000000000000') + b'\\x07allowed\\x04test\\x00\\x00\\x01\\x00\\x01'",
    's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(4)',
    `s.sendto(q, ('${server}', 53))`,
    'try:',
    '    s.recvfrom(512); print("answer")',
    'except socket.timeout:',
    '    print("timeout")',
  ].join('\n');
}

/** Returns the DNS probe as a shell command for the guest. */
function dnsProbe(server: string): string {
  return `python3 -c '${dnsProbeScript(server).replaceAll("'", "'\\''")}'`;
}

const skipReason = (() => {
  if (process.getuid?.() !== 0) return 'needs root for network namespaces, TAPs and nftables';
  for (const tool of ['/usr/sbin/nft', '/usr/sbin/ip', '/usr/bin/openssl', '/usr/bin/curl']) {
    if (!existsSync(tool)) return `needs ${tool}`;
  }
  return null;
})();

describe('egress with real VMs', { skip: skipReason ?? false }, () => {
  let world: EgressWorld;
  const sessions: string[] = [];

  const probe = (session: string, commands: Record<string, string>) =>
    probeGuest(world.target, session, commands);

  async function newSession(egress: Record<string, unknown>): Promise<string> {
    const session = await createSession(world.target, {
      egress,
      memory_mb: 384,
      lifetime_seconds: 1800,
    });
    sessions.push(session.id);
    return session.id;
  }

  /** Returns the guest's eth0 address, for tests that aim at one VM from another. */
  async function guestAddress(session: string): Promise<string> {
    const result = await execute(world.target, session, {
      language: 'bash',
      code: "ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1",
    });
    return result.stdout.trim();
  }

  async function deniedCounter(): Promise<number> {
    const output = await world.host.must('nft', [
      '-j',
      'list',
      'counters',
      'table',
      'inet',
      'hearth',
    ]);
    const items = (JSON.parse(output) as { nftables: { counter?: { packets: number } }[] })
      .nftables;
    return items.reduce((total, item) => total + (item.counter?.packets ?? 0), 0);
  }

  before(async () => {
    if (!(await findImages(hearthHome()))) {
      throw new Error('No guest images for the current sources; run ./setup.sh first.');
    }
    world = await EgressWorld.create();
    await world.startHearthd();
  });

  after(async () => {
    if (process.env.HEARTH_TEST_SHOW_LOG && world) console.log(await world.tailLog(200));
    await world?.close();
    assert.deepEqual(await testNamespaces(), [], 'every test namespace is gone');
  });

  it('world answers without hearth in the way', async () => {
    // Controls for the denials below: from the host namespace, each target replies.
    const fromHost = (args: string[]) => world.host.must('curl', ['-sS', '-m', '5', ...args]);
    assert.match(await fromHost([`http://${WORLD.allowedWeb}/`]), /served-by=198\.18\.0\.10/);
    assert.match(
      await fromHost([
        '-k',
        '--resolve',
        `allowed.test:443:${WORLD.allowedWeb}`,
        'https://allowed.test/',
      ]),
      /host=allowed\.test/,
    );
    assert.match(
      await fromHost([`http://${WORLD.metadata}/latest/meta-data/`]),
      /served-by=169\.254/,
    );
    assert.match(await fromHost(['-g', `http://[${WORLD.webIpv6}]/`]), /served-by=fd00:beef::10/);
    const dnsAnswer = await world.host.must('python3', ['-c', dnsProbeScript(WORLD.dns)]);
    assert.equal(dnsAnswer.trim(), 'answer');
    assert.match(
      await world.world.must('curl', [
        '-sS',
        '-m',
        '5',
        `http://${WORLD.hostUplink}:${WORLD.hostServicePort}/`,
      ]),
      /served-by=0\.0\.0\.0/,
    );
  });

  it('rejects an invalid policy with its reason', async () => {
    await assert.rejects(
      createSession(world.target, { egress: { allow_cidrs: ['2001:db8::/32'] } }),
      (error: unknown) =>
        error instanceof HearthError &&
        error.code === 'invalid_egress_policy' &&
        /IPv6/.test(error.message),
    );
  });

  let denyAll: string;
  let openSession: string;
  let openGuest: string;

  it('deny-all refuses IP literals and every name', async () => {
    denyAll = await newSession({});
    const info = (await callApi(world.target, 'GET', `/v1/sessions/${denyAll}`)) as {
      egress: unknown;
    };
    assert.deepEqual(info.egress, {
      allow_domains: [],
      allow_cidrs: [],
      allow_package_managers: false,
    });
    const counterBefore = await deniedCounter();
    const results = await probe(denyAll, {
      literal: `${CURL} http://${WORLD.allowedWeb}/`,
      literalTls: `${CURL} -k https://${WORLD.otherWeb}/`,
      name: `${CURL} http://allowed.test/`,
      resolver: 'cat /etc/resolv.conf',
    });
    assert.equal(results.literal!.rc, 7, results.literal!.output);
    assert.equal(results.literalTls!.rc, 7, results.literalTls!.output);
    assert.equal(results.name!.rc, 6, `the name does not resolve: ${results.name!.output}`);
    assert.match(results.resolver!.output, /^nameserver 100\.96\.0\.\d+$/m);
    assert.ok((await deniedCounter()) >= counterBefore + 2, 'the denied connections are counted');
  });

  it('allowDomains admits the name over HTTP and HTTPS only', async () => {
    const session = await newSession({ allow_domains: ['allowed.test', '*.wild.test'] });
    // Both names are looked up first, so that their addresses are pinned before the checks
    // below, which aim at pinned addresses with the wrong name.
    const first = await probe(session, {
      http: `${CURL} http://allowed.test/`,
      wild: `${CURL} http://a.wild.test/`,
    });
    assert.equal(first.http!.rc, 0, first.http!.output);
    assert.match(first.http!.output, /served-by=198\.18\.0\.10 host=allowed\.test/);
    assert.match(first.wild!.output, /served-by=198\.18\.0\.12 host=a\.wild\.test/);

    const results = await probe(session, {
      https: `${CURL} -k https://allowed.test/`,
      other: `${CURL} http://other.test/`,
      zoneApex: `${CURL} http://wild.test/`,
      literalOther: `${CURL} http://${WORLD.otherWeb}/`,
      literalPinned: `${CURL} -f http://${WORLD.allowedWeb}/`,
      resolveUnpinned: `${CURL} -k --resolve allowed.test:443:${WORLD.otherWeb} https://allowed.test/`,
      resolvePinnedElsewhere: `${CURL} -k --resolve allowed.test:443:${WORLD.wildWeb} https://allowed.test/`,
      hostMismatch: `${CURL} -f -H 'Host: other.test' http://allowed.test/`,
      sniMismatch: `${CURL} -k --resolve other.test:443:${WORLD.allowedWeb} https://other.test/`,
      otherResolver: dnsProbe(WORLD.dns),
    });
    assert.match(results.https!.output, /served-by=198\.18\.0\.10 host=allowed\.test/);
    assert.equal(results.other!.rc, 6, `other.test does not resolve: ${results.other!.output}`);
    assert.equal(results.zoneApex!.rc, 6, 'a wildcard does not cover its own apex');
    assert.equal(results.literalOther!.rc, 7, results.literalOther!.output);
    assert.equal(
      results.literalPinned!.rc,
      22,
      `no allowed Host: ${results.literalPinned!.output}`,
    );
    assert.equal(results.resolveUnpinned!.rc, 7, results.resolveUnpinned!.output);
    assert.notEqual(results.resolvePinnedElsewhere!.rc, 0, results.resolvePinnedElsewhere!.output);
    assert.doesNotMatch(results.resolvePinnedElsewhere!.output, /served-by/);
    assert.equal(results.hostMismatch!.rc, 22, results.hostMismatch!.output);
    assert.notEqual(results.sniMismatch!.rc, 0);
    assert.doesNotMatch(results.sniMismatch!.output, /served-by/);
    assert.equal(results.otherResolver!.output.trim(), 'timeout');
    await callApi(world.target, 'DELETE', `/v1/sessions/${session}`);
  });

  it('allowCidrs admits the range by IP only', async () => {
    const session = await newSession({ allow_cidrs: [`${WORLD.allowedWeb}/32`] });
    const results = await probe(session, {
      allowed: `${CURL} http://${WORLD.allowedWeb}/`,
      allowedTls: `${CURL} -k https://${WORLD.allowedWeb}/`,
      outside: `${CURL} http://${WORLD.otherWeb}/`,
      name: `${CURL} http://allowed.test/`,
    });
    assert.match(results.allowed!.output, /served-by=198\.18\.0\.10/);
    assert.match(results.allowedTls!.output, /served-by=198\.18\.0\.10/);
    assert.equal(results.outside!.rc, 7, results.outside!.output);
    assert.equal(results.name!.rc, 6, results.name!.output);
    await callApi(world.target, 'DELETE', `/v1/sessions/${session}`);
  });

  it('0.0.0.0/0 still excludes metadata, the host, other VMs and DNS', async () => {
    // The deny-all VM serves on port 8000; the host namespace reaches it, this VM must not.
    await execute(world.target, denyAll, {
      language: 'bash',
      code: 'cd /tmp && (python3 -m http.server 8000 >/dev/null 2>&1 &) ; sleep 3',
    });
    const neighbour = await guestAddress(denyAll);
    assert.match(
      await world.host.must('curl', ['-sS', '-m', '10', `http://${neighbour}:8000/`]),
      /Directory listing/,
    );

    const session = await newSession({ allow_cidrs: ['0.0.0.0/0'] });
    openSession = session;
    const own = await guestAddress(session);
    openGuest = own;
    const ownGateway = own.replace(/\d+$/, (last) => String(Number(last) - 1));
    const neighbourGateway = neighbour.replace(/\d+$/, (last) => String(Number(last) - 1));
    const results = await probe(session, {
      open: `${CURL} http://${WORLD.otherWeb}/`,
      metadata: `${CURL} http://${WORLD.metadata}/latest/meta-data/`,
      metadataToken: `${CURL} -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://${WORLD.metadata}/latest/api/token`,
      hostUplink: `${CURL} http://${WORLD.hostUplink}:${WORLD.hostServicePort}/`,
      ownGateway: `${CURL} http://${ownGateway}:${WORLD.hostServicePort}/`,
      neighbour: `${CURL} http://${neighbour}:8000/`,
      neighbourGateway: `${CURL} http://${neighbourGateway}:${WORLD.hostServicePort}/`,
      otherResolver: dnsProbe(WORLD.dns),
    });
    assert.match(results.open!.output, /served-by=198\.18\.0\.11/);
    for (const name of [
      'metadata',
      'metadataToken',
      'hostUplink',
      'ownGateway',
      'neighbour',
      'neighbourGateway',
    ]) {
      assert.equal(results[name]!.rc, 7, `${name}: ${results[name]!.output}`);
    }
    assert.equal(results.otherResolver!.output.trim(), 'timeout');

    // After the batch above, because the extra address could change their source address.
    const spoofedAddress = own.replace(/\d+$/, '200');
    const spoofed = await probe(session, {
      spoofed:
        `ip addr add ${spoofedAddress}/32 dev eth0 && ` +
        `${CURL} --interface ${spoofedAddress} http://${WORLD.otherWeb}/`,
    });
    assert.notEqual(spoofed.spoofed!.rc, 0, 'a source address other than its own goes nowhere');
    assert.doesNotMatch(spoofed.spoofed!.output, /served-by/);
  });

  it('IPv6 goes nowhere, even with a route the guest made itself', async () => {
    // Slots are /30s of the test pool 100.96.0.0/24, so the last octet gives the TAP.
    const tap = `hearth${Math.floor(Number(openGuest.split('.')[3]) / 4)}`;
    const tapMac = await world.host.must('cat', [`/sys/class/net/${tap}/address`]);
    // A host would route the guest's own prefix to its TAP, so that only hearth is in the
    // way. With IPv6 off on the TAP, as hearth leaves it, the kernel refuses the route.
    const route = await world.host.exec('ip', [
      '-6',
      'route',
      'add',
      WORLD.guestIpv6Prefix,
      'dev',
      tap,
    ]);
    assert.match(route.stderr, /IPv6 is disabled/);
    const results = await probe(openSession, {
      plain: `curl -sS -m 8 -g http://[${WORLD.webIpv6}]/`,
      routed:
        'ip -6 addr add fd00:cafe::2/64 dev eth0 nodad && ' +
        `ip -6 neigh replace fe80::1 lladdr ${tapMac.trim()} dev eth0 && ` +
        'ip -6 route replace default via fe80::1 dev eth0 && ' +
        `curl -sS -m 8 -g http://[${WORLD.webIpv6}]/`,
    });
    assert.notEqual(results.plain!.rc, 0, results.plain!.output);
    assert.notEqual(results.routed!.rc, 0, results.routed!.output);
    assert.doesNotMatch(results.routed!.output, /served-by/);
  });

  it('the package-manager preset lets pip install from the host index', async () => {
    const session = await newSession({ allow_package_managers: true });
    const config = await execute(world.target, session, {
      language: 'bash',
      code: 'cat /etc/pip.conf',
    });
    assert.match(config.stdout, /index-url = http:\/\/pypi\.test\/simple\//);
    const install = await execute(world.target, session, {
      language: 'bash',
      code: `pip install --no-cache-dir --disable-pip-version-check ${WORLD_PACKAGE.name} 2>&1`,
      timeout_seconds: 600,
    });
    assert.equal(install.exit_code, 0, install.stdout);
    const imported = await execute(world.target, session, {
      code: `import ${WORLD_PACKAGE.name}; print(${WORLD_PACKAGE.name}.VALUE)`,
    });
    assert.equal(imported.stdout, `${WORLD_PACKAGE.value}\n`);
    const results = await probe(session, { notInPreset: `${CURL} http://allowed.test/` });
    assert.equal(results.notInPreset!.rc, 6, results.notInPreset!.output);
  });

  it('a restart after a crash removes the TAPs and rules left behind', async () => {
    const tapsBefore = await world.host.must('ip', ['-br', 'link', 'show', 'type', 'tun']);
    assert.match(tapsBefore, /^hearth\d+/m, 'the running sessions have TAPs');
    await world.stopHearthd('SIGKILL');
    await world.restartHearthd();

    const tapsAfter = await world.host.must('ip', ['-br', 'link', 'show', 'type', 'tun']);
    assert.doesNotMatch(tapsAfter, /^hearth\d+/m);
    const table = await world.host.must('nft', ['list', 'table', 'inet', 'hearth']);
    assert.doesNotMatch(table, /chain vm\d+_/, 'no VM chains are left');
    assert.match(table, /chain forward_guard/, 'forwarding stays guarded across the crash');
    assert.deepEqual(await qemuProcessesUnder(world.runDir), [], 'the old VMs are gone');

    await world.stopHearthd('SIGTERM');
    const deleted = await world.host.exec('nft', ['list', 'table', 'inet', 'hearth']);
    assert.notEqual(deleted.code, 0, 'a clean shutdown deletes the table');
    const forwarding = await world.host.must('sysctl', ['-n', 'net.ipv4.ip_forward']);
    assert.equal(forwarding.trim(), '0', 'forwarding is off again');
  });
});
