// The generated nftables scripts, checked as text and applied for real inside a network
// namespace that the test creates (never in the root namespace).
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { parseIpv4Cidr } from '../../src/network/ipv4.js';
import { parseCounterPackets, parseTableListing } from '../../src/network/nft.js';
import { staleObjectsScript } from '../../src/network/reconcile.js';
import {
  addVmRuleset,
  baseRuleset,
  deleteVmRuleset,
  FORWARD_GUARD_CHAIN,
  pinRuleset,
  replacePolicyRuleset,
  type VmRulesetOptions,
} from '../../src/network/ruleset.js';
import { parseHearthTaps } from '../../src/network/tap.js';
import { Netns } from '../helpers/netns.js';

const pool = parseIpv4Cidr('100.96.0.0/16');
const denied = ['169.254.0.0/16', '127.0.0.0/8', '100.96.0.0/16'].map(parseIpv4Cidr);

/** Returns one chain of a script, from its header to the closing brace at its indent. */
function chainBody(script: string, chain: string): string {
  const start = script.indexOf(`chain ${chain} {`);
  assert.ok(start >= 0, `the script has chain ${chain}`);
  return script.slice(start, script.indexOf('\n  }', start));
}

const vm = (slot: number, cidrs: string[] = []): VmRulesetOptions => ({
  slot,
  tapDevice: `hearth${slot}`,
  guest: `100.96.0.${slot * 4 + 2}`,
  gateway: `100.96.0.${slot * 4 + 1}`,
  cidrs: cidrs.map(parseIpv4Cidr),
  httpProxyPort: 40080,
  tlsProxyPort: 40443,
});

describe('nftables ruleset text', () => {
  it('adds the forwarding guard only when asked', () => {
    assert.ok(baseRuleset({ pool, denied, guardForwarding: true }).includes(FORWARD_GUARD_CHAIN));
    assert.ok(!baseRuleset({ pool, denied, guardForwarding: false }).includes(FORWARD_GUARD_CHAIN));
  });

  it('puts the deny rules before the allow rules', () => {
    const forward = chainBody(addVmRuleset(vm(3, ['0.0.0.0/0'])), 'vm3_forward');
    const order = [
      'meta nfproto ipv6',
      'ip saddr != 100.96.0.14 drop',
      'ip daddr @denied',
      'th dport 53',
      'ip daddr @vm3_cidrs accept',
      'ip daddr @vm3_pins accept',
    ].map((rule) => forward.indexOf(rule));
    assert.ok(
      order.every((index) => index >= 0),
      `every rule is present: ${order}`,
    );
    assert.deepEqual(
      [...order].sort((a, b) => a - b),
      order,
    );
  });

  it('lets only redirected connections reach the proxy ports', () => {
    const input = chainBody(addVmRuleset(vm(0)), 'vm0_input');
    assert.match(
      input,
      /ip daddr 100\.96\.0\.1 tcp dport \{ 40080, 40443 \} ct status dnat accept/,
    );
    assert.match(input, /th dport 53 accept/);
  });

  it('pins by re-adding with the new timeout in one script', () => {
    assert.equal(
      pinRuleset(2, [{ address: '192.0.2.10', timeoutSeconds: 300 }]),
      'add element inet hearth vm2_pins { 192.0.2.10 timeout 1s }\n' +
        'delete element inet hearth vm2_pins { 192.0.2.10 }\n' +
        'add element inet hearth vm2_pins { 192.0.2.10 timeout 300s }\n',
    );
  });

  it('finds only hearth TAPs in ip link output', () => {
    const links = [
      { ifname: 'hearth3', linkinfo: { info_kind: 'tun' } },
      { ifname: 'hearth-x', linkinfo: { info_kind: 'tun' } },
      { ifname: 'hearth4', linkinfo: { info_kind: 'veth' } },
      { ifname: 'eth0' },
    ];
    assert.deepEqual(parseHearthTaps(JSON.stringify(links)), ['hearth3']);
  });
});

describe('nftables ruleset in a namespace', () => {
  let netns: Netns;
  const nft = (script: string) => netns.must('nft', ['-f', '-'], script);
  const listing = async () =>
    parseTableListing(await netns.must('nft', ['-j', 'list', 'table', 'inet', 'hearth']));

  before(async () => {
    netns = await Netns.create('rules');
  });

  after(async () => {
    await netns?.delete();
  });

  it('applies, pins and removes VM rules as transactions', async () => {
    await nft(baseRuleset({ pool, denied, guardForwarding: true }));
    await nft(addVmRuleset(vm(0, ['198.18.0.10/32', '0.0.0.0/0'])));
    await nft(addVmRuleset(vm(1)));
    await nft(pinRuleset(1, [{ address: '198.18.0.10', timeoutSeconds: 120 }]));
    // Pinning an address again only changes its timeout.
    await nft(pinRuleset(1, [{ address: '198.18.0.10', timeoutSeconds: 600 }]));
    const pins = await netns.must('nft', ['list', 'set', 'inet', 'hearth', 'vm1_pins']);
    assert.match(pins, /198\.18\.0\.10 timeout 10m/);

    const before = await listing();
    assert.deepEqual(before.mapKeys.get('vm_forward')?.sort(), ['hearth0', 'hearth1']);
    assert.ok(before.chains.includes('vm1_nat_input'));
    assert.ok(before.counters.includes('vm0_denied'));

    await nft(deleteVmRuleset(0, 'hearth0'));
    const after = await listing();
    assert.deepEqual(after.mapKeys.get('vm_forward'), ['hearth1']);
    assert.ok(!after.chains.some((chain) => chain.startsWith('vm0_')));
    assert.ok(!after.sets.some((set) => set.startsWith('vm0_')));
    assert.ok(!after.counters.includes('vm0_denied'));
    assert.ok(after.chains.includes(FORWARD_GUARD_CHAIN));

    const counter = await netns.must('nft', [
      '-j',
      'list',
      'counter',
      'inet',
      'hearth',
      'vm1_denied',
    ]);
    assert.equal(parseCounterPackets(counter), 0);
  });

  it('replaces a policy and drops its pins', async () => {
    await nft(addVmRuleset(vm(4, ['198.18.0.10/32'])));
    await nft(pinRuleset(4, [{ address: '198.18.0.12', timeoutSeconds: 120 }]));
    await nft(replacePolicyRuleset(4, ['198.18.0.11/32', '10.1.0.0/16'].map(parseIpv4Cidr)));
    const cidrs = await netns.must('nft', ['list', 'set', 'inet', 'hearth', 'vm4_cidrs']);
    assert.match(cidrs, /10\.1\.0\.0\/16/);
    assert.match(cidrs, /198\.18\.0\.11/);
    assert.doesNotMatch(cidrs, /198\.18\.0\.10/);
    const pins = await netns.must('nft', ['list', 'set', 'inet', 'hearth', 'vm4_pins']);
    assert.doesNotMatch(pins, /198\.18\.0\.12/);

    await nft(replacePolicyRuleset(4, []));
    const emptied = await netns.must('nft', ['list', 'set', 'inet', 'hearth', 'vm4_cidrs']);
    assert.doesNotMatch(emptied, /elements/);
    await nft(deleteVmRuleset(4, 'hearth4'));
  });

  it('rejects a script with an error as a whole', async () => {
    const broken = addVmRuleset(vm(7)) + 'add rule inet hearth vm7_forward nonsense\n';
    const result = await netns.exec('nft', ['-f', '-'], broken);
    assert.notEqual(result.code, 0);
    assert.ok(!(await listing()).chains.includes('vm7_forward'), 'nothing of the script applied');
  });

  it('removes the objects of inactive slots', async () => {
    await nft(addVmRuleset(vm(5)));
    const script = staleObjectsScript(await listing(), new Set([1]), new Set(['hearth1']));
    await nft(script);
    const left = await listing();
    assert.ok(!left.chains.some((chain) => chain.startsWith('vm5_')));
    assert.ok(left.chains.includes('vm1_forward'));
    assert.deepEqual(left.mapKeys.get('vm_input'), ['hearth1']);
  });

  it('removes stale TAPs and the table from inside the namespace', async () => {
    await netns.must('ip', ['tuntap', 'add', 'dev', 'hearth9', 'mode', 'tap']);
    await netns.must('ip', ['link', 'add', 'hearthx', 'type', 'veth', 'peer', 'name', 'hearthy']);
    const reconcile = fileURLToPath(new URL('../../src/network/reconcile.js', import.meta.url));
    const script =
      `const { removeStaleState } = await import(${JSON.stringify(reconcile)});` +
      `const logger = { warn() {}, info() {} };` +
      `const state = await removeStaleState(new Set(), new Set(), logger);` +
      `console.log(JSON.stringify(state));`;
    const output = await netns.must(process.execPath, ['--input-type=module', '-e', script]);
    assert.deepEqual(JSON.parse(output), { removedTaps: ['hearth9'], forwardingWasGuarded: true });
    const table = await netns.exec('nft', ['list', 'table', 'inet', 'hearth']);
    assert.notEqual(table.code, 0, 'the table is gone');
    const links = await netns.must('ip', ['-br', 'link']);
    assert.ok(!/^hearth9\b/m.test(links));
    assert.match(links, /^hearthx\b/m, 'a device that is not a hearth TAP stays');
  });
});
