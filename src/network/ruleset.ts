// The nftables ruleset hearthd owns, as text for `nft -f`. Each script is applied as one
// transaction, so a VM's rules appear or disappear whole.
//
// Table `inet hearth`. The base chains below dispatch on the input interface to per-VM
// chains, for VM slot N with TAP hearthN, guest address G and gateway W:
//
//   prerouting (nat)   iifname vmap → vmN_prerouting: TCP 80/443 to an address pinned by the
//                      DNS proxy is redirected to this VM's HTTP or TLS proxy listener on W
//   nat_input (nat)    iifname vmap → vmN_nat_input: the redirected connection's source is
//                      rewritten to its original destination, which is how the proxy learns
//                      where the guest was connecting (see proxy.ts)
//   input (filter)     iifname vmap → vmN_input: only DNS to W and redirected proxy traffic
//   forward (filter)   iifname vmap → vmN_forward: the policy: denied ranges, then allowed
//                      CIDRs, then pinned addresses; everything else is rejected and counted
//   postrouting (nat)  VM traffic leaving through any other interface is masqueraded
import { formatCidr, type Ipv4Cidr } from './ipv4.js';
import { TAP_PREFIX } from './pool.js';

export const TABLE = 'inet hearth';
/** The chain that exists only when hearthd turned IPv4 forwarding on itself. */
export const FORWARD_GUARD_CHAIN = 'forward_guard';
const VM_MAPS = ['prerouting', 'nat_input', 'input', 'forward'] as const;

export interface BaseRulesetOptions {
  pool: Ipv4Cidr;
  /** Ranges no VM reaches; see denylist.ts. */
  denied: readonly Ipv4Cidr[];
  /**
   * Set when the host did not forward IPv4 before hearthd enabled it: traffic between other
   * interfaces is then dropped, so enabling forwarding for VMs changes nothing else.
   */
  guardForwarding: boolean;
}

/** Builds the table with its base chains and no VMs, to apply after deleting any older one. */
export function baseRuleset(options: BaseRulesetOptions): string {
  const tapPattern = `"${TAP_PREFIX}*"`;
  const lines = [
    `table ${TABLE} {`,
    '  set denied {',
    '    type ipv4_addr; flags interval; auto-merge;',
    `    elements = { ${options.denied.map(formatCidr).join(', ')} }`,
    '  }',
    ...VM_MAPS.map((hook) => `  map vm_${hook} { type ifname : verdict; }`),
    '  chain prerouting {',
    '    type nat hook prerouting priority dstnat; policy accept;',
    '    iifname vmap @vm_prerouting',
    '  }',
    '  chain nat_input {',
    // nft 1.0.6 accepts the name srcnat only on postrouting; 100 is its value.
    '    type nat hook input priority 100; policy accept;',
    '    iifname vmap @vm_nat_input',
    '  }',
    '  chain input {',
    '    type filter hook input priority filter; policy accept;',
    '    iifname vmap @vm_input',
    // A TAP without rules (still being set up, or left by a crash) gets nothing.
    `    iifname ${tapPattern} drop`,
    '  }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    '    iifname vmap @vm_forward',
    `    iifname ${tapPattern} drop`,
    // Nothing opens a connection into a VM through the host.
    `    oifname ${tapPattern} ct state established,related accept`,
    `    oifname ${tapPattern} drop`,
    ...(options.guardForwarding ? [`    jump ${FORWARD_GUARD_CHAIN}`] : []),
    '  }',
    ...(options.guardForwarding ? [`  chain ${FORWARD_GUARD_CHAIN} {`, '    drop', '  }'] : []),
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    ip saddr ${formatCidr(options.pool)} oifname != ${tapPattern} masquerade`,
    '  }',
    '}',
  ];
  return lines.join('\n') + '\n';
}

export interface VmRulesetOptions {
  slot: number;
  tapDevice: string;
  guest: string;
  gateway: string;
  /** The policy's allowed ranges, already merged so that none overlap. */
  cidrs: readonly Ipv4Cidr[];
  httpProxyPort: number;
  tlsProxyPort: number;
}

/** Names of one VM's objects in the table. */
export function vmObjectNames(slot: number) {
  const prefix = `vm${slot}`;
  return {
    cidrs: `${prefix}_cidrs`,
    pins: `${prefix}_pins`,
    denied: `${prefix}_denied`,
    chain: (hook: (typeof VM_MAPS)[number]) => `${prefix}_${hook}`,
  };
}

/** Adds a VM's sets, counter and chains, and points the dispatch maps at them. */
export function addVmRuleset(vm: VmRulesetOptions): string {
  const names = vmObjectNames(vm.slot);
  const deny = `counter name "${names.denied}"`;
  const reject = `${deny} reject with icmpx admin-prohibited`;
  const proxyPorts = `{ ${vm.httpProxyPort}, ${vm.tlsProxyPort} }`;
  const cidrElements =
    vm.cidrs.length > 0 ? ` elements = { ${vm.cidrs.map(formatCidr).join(', ')} };` : '';
  const lines = [
    `table ${TABLE} {`,
    `  set ${names.cidrs} { type ipv4_addr; flags interval; auto-merge;${cidrElements} }`,
    `  set ${names.pins} { type ipv4_addr; flags timeout; }`,
    `  counter ${names.denied} { }`,
    `  chain ${names.chain('prerouting')} {`,
    // An address allowed by CIDR is reached directly, without the name check.
    `    ip daddr @${names.cidrs} return`,
    '    ip daddr @denied return',
    `    ip daddr @${names.pins} tcp dport 80 redirect to :${vm.httpProxyPort}`,
    `    ip daddr @${names.pins} tcp dport 443 redirect to :${vm.tlsProxyPort}`,
    '  }',
    `  chain ${names.chain('nat_input')} {`,
    `    ip daddr ${vm.gateway} tcp dport ${proxyPorts} snat ip to ct original ip daddr`,
    '  }',
    `  chain ${names.chain('input')} {`,
    `    meta nfproto ipv6 ${deny} drop`,
    // Anti-spoofing: a guest may only use the address it was given.
    `    ip saddr != ${vm.guest} drop`,
    '    ct state established,related accept',
    `    ip daddr ${vm.gateway} meta l4proto { tcp, udp } th dport 53 accept`,
    // Only connections that the prerouting rules redirected reach the proxy ports.
    `    ip daddr ${vm.gateway} tcp dport ${proxyPorts} ct status dnat accept`,
    `    ${reject}`,
    '  }',
    `  chain ${names.chain('forward')} {`,
    `    meta nfproto ipv6 ${deny} drop`,
    `    ip saddr != ${vm.guest} drop`,
    '    ct state established,related accept',
    // hearth never translates forwarded VM traffic, so a DNAT here came from another
    // table's port forwarding, and its target is a service on or behind the host.
    `    ct status dnat ${reject}`,
    `    ip daddr @denied ${reject}`,
    // Names resolve only through the DNS proxy, which pins what it answers.
    `    meta l4proto { tcp, udp } th dport 53 ${deny} drop`,
    `    ip daddr @${names.cidrs} accept`,
    // QUIC carries its server name where the TLS proxy cannot check it; clients fall back
    // to TCP, which goes through the proxy.
    `    ip daddr @${names.pins} udp dport 443 ${reject}`,
    `    ip daddr @${names.pins} accept`,
    `    ${reject}`,
    '  }',
    '}',
    ...VM_MAPS.map(
      (hook) => `add element ${TABLE} vm_${hook} { "${vm.tapDevice}" : goto ${names.chain(hook)} }`,
    ),
  ];
  return lines.join('\n') + '\n';
}

/** Removes everything addVmRuleset added, as one transaction. */
export function deleteVmRuleset(slot: number, tapDevice: string): string {
  const names = vmObjectNames(slot);
  const lines = [
    ...VM_MAPS.map((hook) => `delete element ${TABLE} vm_${hook} { "${tapDevice}" }`),
    ...VM_MAPS.flatMap((hook) => [
      `flush chain ${TABLE} ${names.chain(hook)}`,
      `delete chain ${TABLE} ${names.chain(hook)}`,
    ]),
    `delete set ${TABLE} ${names.cidrs}`,
    `delete set ${TABLE} ${names.pins}`,
    `delete counter ${TABLE} ${names.denied}`,
  ];
  return lines.join('\n') + '\n';
}

/**
 * Replaces a VM's allowed ranges and empties its pinned set, as one transaction. The pins
 * go because they are addresses of names that the old policy allowed.
 */
export function replacePolicyRuleset(slot: number, cidrs: readonly Ipv4Cidr[]): string {
  const names = vmObjectNames(slot);
  const lines = [`flush set ${TABLE} ${names.cidrs}`, `flush set ${TABLE} ${names.pins}`];
  if (cidrs.length > 0) {
    lines.push(`add element ${TABLE} ${names.cidrs} { ${cidrs.map(formatCidr).join(', ')} }`);
  }
  return lines.join('\n') + '\n';
}

export interface PinUpdate {
  address: string;
  timeoutSeconds: number;
}

/**
 * Adds addresses to a VM's pinned set, or extends their timeout. An existing element keeps
 * its timeout on `add`, so each one is added (a no-op if present), deleted and added again
 * with the new timeout, all in one transaction.
 */
export function pinRuleset(slot: number, pins: readonly PinUpdate[]): string {
  const set = `${TABLE} ${vmObjectNames(slot).pins}`;
  return (
    pins
      .flatMap((pin) => [
        `add element ${set} { ${pin.address} timeout 1s }`,
        `delete element ${set} { ${pin.address} }`,
        `add element ${set} { ${pin.address} timeout ${pin.timeoutSeconds}s }`,
      ])
      .join('\n') + '\n'
  );
}
