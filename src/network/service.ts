// The egress NetworkService: per VM a TAP, nft rules, a DNS proxy and an HTTP/TLS proxy.
//
//   attach:  a /30 from the pool ─► TAP ─► DNS proxy on gateway:53 ─► HTTP/TLS listeners
//            ─► one nft transaction adding the VM's sets, chains and map entries
//   detach:  listeners closed ─► one nft transaction removing them ─► TAP deleted
//            ─► the /30 returns to the pool
import type { Logger } from 'pino';
import { HearthError } from '../errors.js';
import type { EgressConfig } from './config.js';
import { deniedRanges, isDeniedDestination } from './denylist.js';
import { DnsProxy } from './dns-proxy.js';
import { hostResolver, type Upstream } from './dns-upstream.js';
import { matchesDomain, formatDomainPattern } from './domains.js';
import { cidrsOverlap, formatCidr, parseIpv4Cidr, type Ipv4Cidr } from './ipv4.js';
import { applyRuleset, deleteTable, readCounterPackets } from './nft.js';
import { PinTable, type ResolvedAddress } from './pins.js';
import { resolvePolicy, type PresetAllowance, type ResolvedPolicy } from './policy.js';
import { AddressPool, TAP_PREFIX, type VmAddressing } from './pool.js';
import {
  discoverPackageIndexes,
  guestPackageConfig,
  hasAnyIndex,
  presetAllowance,
  type PackageIndexes,
} from './presets.js';
import { ServerNameProxy } from './proxy.js';
import { removeStaleState } from './reconcile.js';
import {
  addVmRuleset,
  baseRuleset,
  deleteVmRuleset,
  pinRuleset,
  replacePolicyRuleset,
  vmObjectNames,
} from './ruleset.js';
import { createTap, deleteTap, listRouteDestinations, readSysctl, writeSysctl } from './tap.js';
import type { EgressPolicy, GuestNetworkSettings, NetworkService, VmNetwork } from './types.js';

// x86 Linux accepts a 2048-byte command line. hearth's own arguments and the virtio-mmio
// devices QEMU appends take under 600 bytes (an estimate), so the network and package
// settings get 1 KiB.
const MAX_KERNEL_ARGS_BYTES = 1024;
const IP_FORWARD = 'net/ipv4/ip_forward';

interface AttachedVm {
  vmId: string;
  addressing: VmAddressing;
  /** Replaced whole by setPolicy(); the proxies read it on every check. */
  policy: ResolvedPolicy;
  pins: PinTable;
  /** Pin updates applied one after another, so an answer never overtakes an earlier pin. */
  pinQueue: Promise<unknown>;
  dns: DnsProxy | null;
  proxy: ServerNameProxy | null;
  rulesAdded: boolean;
  deniedByProxies: number;
  deniedDnsQueries: number;
  detaching: Promise<void> | null;
}

export class EgressService implements NetworkService {
  private readonly pool: AddressPool;
  private readonly denied: Ipv4Cidr[];
  private readonly vms = new Map<string, AttachedVm>();
  private readonly preset: PresetAllowance | null;
  private readonly presetKernelArgs: string[];
  private readonly presetFiles: GuestNetworkSettings['packageFiles'];
  private started: Promise<void> | null = null;
  private guardForwarding = false;
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly upstream: Upstream,
    config: EgressConfig,
    indexes: PackageIndexes,
    private readonly logger: Logger,
  ) {
    this.pool = new AddressPool(config.pool);
    this.denied = deniedRanges(config.pool, config.extraDeniedCidrs);
    this.preset = hasAnyIndex(indexes) ? presetAllowance(indexes) : null;
    this.presetFiles = guestPackageConfig(indexes);
    this.presetKernelArgs = packageKernelArgs(this.presetFiles);
  }

  /**
   * Checks the host (root, a free address pool, a resolver) and discovers the package
   * preset. Throws egress_unavailable or invalid_config with the fix in the message.
   */
  static async create(config: EgressConfig, logger: Logger): Promise<EgressService> {
    if (process.getuid?.() !== 0) {
      throw new HearthError(
        'egress_unavailable',
        'HEARTH_EGRESS=on needs root, to create TAP devices and nftables rules; run ' +
          'hearthd as root or set HEARTH_EGRESS=off.',
      );
    }
    await checkPoolIsFree(config.pool);
    const upstream = config.upstream ?? (await hostResolver());
    if (!upstream) {
      throw new HearthError(
        'invalid_config',
        '/etc/resolv.conf lists no nameserver for the DNS proxy to forward to; set ' +
          'HEARTH_EGRESS_DNS_UPSTREAM to a resolver address.',
      );
    }
    const indexes = await discoverPackageIndexes(config.preset);
    const service = new EgressService(upstream, config, indexes, logger);
    const argsBytes = Buffer.byteLength(service.presetKernelArgs.join(' '));
    if (argsBytes > MAX_KERNEL_ARGS_BYTES - 64) {
      throw new HearthError(
        'invalid_config',
        `The package-manager settings for guests take ${argsBytes} bytes of the kernel ` +
          `command line, more than the ${MAX_KERNEL_ARGS_BYTES - 64} available; configure ` +
          'fewer indexes.',
      );
    }
    logger.info(
      {
        pool: formatCidr(config.pool),
        upstream: `${upstream.address}:${upstream.port}`,
        packageDomains: service.preset?.domains.map(formatDomainPattern) ?? [],
        packageCidrs: service.preset?.cidrs.map(formatCidr) ?? [],
      },
      'egress enabled',
    );
    return service;
  }

  /**
   * Removes TAPs and rules an earlier hearthd left behind, then installs the base table.
   * With VMs attached, only what belongs to no attached VM is removed.
   */
  async reconcile(): Promise<void> {
    if (this.started && this.vms.size > 0) {
      await this.started;
      await removeStaleState(this.activeTaps(), this.activeSlots(), this.logger);
      return;
    }
    this.started = this.installBase();
    await this.started;
  }

  validatePolicy(policy: EgressPolicy): void {
    resolvePolicy(policy, policy.allowPackageManagers ? this.preset : null);
  }

  async attach(vmId: string, policy: EgressPolicy): Promise<VmNetwork> {
    if (this.closing) {
      throw new HearthError('server_shutting_down', 'hearthd is shutting down.', 503);
    }
    await (this.started ??= this.installBase());
    const resolved = resolvePolicy(policy, policy.allowPackageManagers ? this.preset : null);
    const addressing = this.pool.allocate();
    const vm: AttachedVm = {
      vmId,
      addressing,
      policy: resolved,
      pins: new PinTable(),
      pinQueue: Promise.resolve(),
      dns: null,
      proxy: null,
      rulesAdded: false,
      deniedByProxies: 0,
      deniedDnsQueries: 0,
      detaching: null,
    };
    this.vms.set(vmId, vm);
    try {
      await this.setUp(vm);
    } catch (error) {
      await this.detach(vm);
      if (error instanceof HearthError) throw error;
      throw new HearthError(
        'network_setup_failed',
        `Could not set up the network of VM ${vmId}: ${(error as Error).message}`,
        500,
      );
    }
    this.logger.info(
      {
        vmId,
        tap: addressing.tapDevice,
        guest: addressing.guest,
        domains: resolved.domains.length,
        cidrs: resolved.cidrs.map(formatCidr),
      },
      'VM network attached',
    );
    const kernelArgs = [
      `hearth.net=${addressing.guest}/${addressing.prefix},${addressing.gateway}`,
    ];
    if (policy.allowPackageManagers) kernelArgs.push(...this.presetKernelArgs);
    const network: VmNetwork = {
      device: { tapDevice: addressing.tapDevice, macAddress: addressing.macAddress, kernelArgs },
      policy,
      guest: this.guestSettings(addressing, policy),
      setPolicy: async (next) => {
        await this.setPolicy(vm, next);
        network.policy = next;
        network.guest = this.guestSettings(addressing, next);
      },
      detach: () => this.detach(vm),
      deniedConnections: () => this.deniedConnections(vmId),
    };
    return network;
  }

  private guestSettings(addressing: VmAddressing, policy: EgressPolicy): GuestNetworkSettings {
    return {
      address: addressing.guest,
      prefix: addressing.prefix,
      gateway: addressing.gateway,
      macAddress: addressing.macAddress,
      packageFiles: policy.allowPackageManagers ? { ...this.presetFiles } : {},
    };
  }

  /**
   * Replaces an attached VM's policy. The nft sets change in one transaction, then the
   * names that the DNS and HTTP/TLS proxies check. The swap waits in the pin queue, so no
   * pin made under the old policy lands after it. A bad policy throws
   * invalid_egress_policy and the old one stays.
   */
  private async setPolicy(vm: AttachedVm, policy: EgressPolicy): Promise<void> {
    const resolved = resolvePolicy(policy, policy.allowPackageManagers ? this.preset : null);
    const swap = vm.pinQueue.then(async () => {
      if (vm.detaching) {
        throw new HearthError(
          'network_setup_failed',
          `The network of VM ${vm.vmId} is being removed, so its policy cannot change.`,
          500,
        );
      }
      await applyRuleset(replacePolicyRuleset(vm.addressing.slot, resolved.cidrs));
      vm.policy = resolved;
      vm.pins = new PinTable();
    });
    vm.pinQueue = swap.catch(() => undefined);
    await swap;
    this.logger.info(
      { vmId: vm.vmId, domains: resolved.domains.length, cidrs: resolved.cidrs.map(formatCidr) },
      'VM egress policy replaced',
    );
  }

  /**
   * Connections a VM tried that the policy refused: packets rejected by its nft rules
   * (a client's retransmissions count again) plus connections the HTTP/TLS proxy refused.
   * Returns 0 for a VM this service does not know.
   */
  async deniedConnections(vmId: string): Promise<number> {
    const vm = this.vms.get(vmId);
    if (!vm) return 0;
    const packets = await readCounterPackets(vmObjectNames(vm.addressing.slot).denied);
    return packets + vm.deniedByProxies;
  }

  /** DNS queries a VM made for names its policy does not allow. */
  deniedDnsQueries(vmId: string): number {
    return this.vms.get(vmId)?.deniedDnsQueries ?? 0;
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.allSettled([...this.vms.values()].map((vm) => this.detach(vm)));
      await this.started?.catch(() => undefined);
      await deleteTable().catch((error) =>
        this.logger.error({ err: error }, 'could not delete the nftables table'),
      );
      if (this.guardForwarding) {
        await writeSysctl(IP_FORWARD, '0').catch((error) =>
          this.logger.error({ err: error }, 'could not turn IPv4 forwarding back off'),
        );
      }
      this.logger.info('egress stopped');
    })();
    return this.closing;
  }

  private async installBase(): Promise<void> {
    const stale = await removeStaleState(new Set(), new Set(), this.logger);
    // Forwarding is needed for VM traffic. If the host did not forward before, hearth turns
    // it on and the base table drops all other forwarded traffic; close() turns it off.
    const forwardingOff = (await readSysctl(IP_FORWARD)) === '0';
    this.guardForwarding = forwardingOff || stale.forwardingWasGuarded;
    await applyRuleset(
      baseRuleset({
        pool: this.pool.range,
        denied: this.denied,
        guardForwarding: this.guardForwarding,
      }),
    );
    if (forwardingOff) await writeSysctl(IP_FORWARD, '1');
  }

  private async setUp(vm: AttachedVm): Promise<void> {
    const { addressing, policy } = vm;
    const logger = this.logger.child({ vmId: vm.vmId });
    const isAllowed = (name: string) => matchesDomain(vm.policy.domains, name);
    await createTap(addressing.tapDevice, `${addressing.gateway}/${addressing.prefix}`);
    vm.dns = await DnsProxy.start({
      bindAddress: addressing.gateway,
      guestAddress: addressing.guest,
      upstream: this.upstream,
      isAllowed,
      pin: (name, addresses) => this.pin(vm, name, addresses),
      onDenied: () => (vm.deniedDnsQueries += 1),
      logger,
    });
    vm.proxy = await ServerNameProxy.start({
      bindAddress: addressing.gateway,
      isAllowed,
      isPinned: (name, address) => vm.pins.isPinned(name, address, Date.now()),
      isDenied: (address) => isDeniedDestination(address, this.denied),
      onDenied: () => (vm.deniedByProxies += 1),
      logger,
    });
    await applyRuleset(
      addVmRuleset({
        slot: addressing.slot,
        tapDevice: addressing.tapDevice,
        guest: addressing.guest,
        gateway: addressing.gateway,
        cidrs: policy.cidrs,
        httpProxyPort: vm.proxy.httpPort,
        tlsProxyPort: vm.proxy.tlsPort,
      }),
    );
    vm.rulesAdded = true;
  }

  /** Pins an answer's addresses into the VM's set; resolves false if that failed. */
  private pin(vm: AttachedVm, name: string, addresses: ResolvedAddress[]): Promise<boolean> {
    const reachable = addresses.filter(
      (answer) => !isDeniedDestination(answer.address, this.denied),
    );
    const applied = vm.pinQueue.then(async () => {
      if (vm.detaching) return false;
      // The name was checked before this pin waited in the queue, maybe under a policy
      // that setPolicy() has replaced since.
      if (!matchesDomain(vm.policy.domains, name)) return false;
      const updates = vm.pins.record(name, reachable, Date.now());
      if (updates === null) return false;
      if (updates.length === 0) return true;
      try {
        await applyRuleset(pinRuleset(vm.addressing.slot, updates));
        return true;
      } catch (error) {
        vm.pins.forget(updates);
        this.logger.error({ vmId: vm.vmId, err: error }, 'could not pin DNS answer addresses');
        return false;
      }
    });
    vm.pinQueue = applied.catch(() => undefined);
    return applied;
  }

  private detach(vm: AttachedVm): Promise<void> {
    vm.detaching ??= (async () => {
      const steps: [string, () => Promise<void> | undefined][] = [
        ['close the proxies', () => vm.proxy?.close()],
        ['close the DNS proxy', () => vm.dns?.close()],
        [
          'remove the nftables rules',
          async () => {
            await vm.pinQueue;
            if (vm.rulesAdded) {
              await applyRuleset(deleteVmRuleset(vm.addressing.slot, vm.addressing.tapDevice));
            }
          },
        ],
        ['delete the TAP device', () => deleteTap(vm.addressing.tapDevice)],
      ];
      for (const [step, run] of steps) {
        try {
          await run();
        } catch (error) {
          this.logger.error({ vmId: vm.vmId, err: error }, `could not ${step}`);
        }
      }
      this.pool.release(vm.addressing.slot);
      this.vms.delete(vm.vmId);
    })();
    return vm.detaching;
  }

  private activeTaps(): Set<string> {
    return new Set([...this.vms.values()].map((vm) => vm.addressing.tapDevice));
  }

  private activeSlots(): Set<number> {
    return new Set([...this.vms.values()].map((vm) => vm.addressing.slot));
  }
}

/** Kernel arguments carrying the guest's package-manager files, base64 encoded. */
function packageKernelArgs(files: GuestNetworkSettings['packageFiles']): string[] {
  const args: string[] = [];
  if (files.pip) args.push(`hearth.pip=${Buffer.from(files.pip).toString('base64')}`);
  if (files.npm) args.push(`hearth.npmrc=${Buffer.from(files.npm).toString('base64')}`);
  if (files.apt) args.push(`hearth.aptconf=${Buffer.from(files.apt).toString('base64')}`);
  return args;
}

/** Rejects a pool that overlaps a route of the host other than hearth's own TAPs. */
async function checkPoolIsFree(pool: Ipv4Cidr): Promise<void> {
  const tapPattern = new RegExp(`^${TAP_PREFIX}\\d+$`);
  for (const route of await listRouteDestinations()) {
    if (route.dst === 'default' || tapPattern.test(route.dev)) continue;
    let destination: Ipv4Cidr;
    try {
      destination = parseIpv4Cidr(route.dst);
    } catch {
      continue;
    }
    if (cidrsOverlap(destination, pool)) {
      throw new HearthError(
        'invalid_config',
        `The egress address pool ${formatCidr(pool)} overlaps the host's route to ` +
          `${route.dst} on ${route.dev}; set HEARTH_EGRESS_POOL to a free range.`,
      );
    }
  }
}
