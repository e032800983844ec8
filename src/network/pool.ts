import { HearthError } from '../errors.js';
import { cidrContains, formatIpv4, type Ipv4Cidr } from './ipv4.js';

/** Every VM gets a /30: network, gateway (the host's side), guest, broadcast. */
export const VM_SUBNET_PREFIX = 30;
const ADDRESSES_PER_VM = 4;
/** TAP names are this prefix and the slot number; reconcile removes stale ones by it. */
export const TAP_PREFIX = 'hearth';

/** The addresses and names of one VM's link to the host. */
export interface VmAddressing {
  slot: number;
  tapDevice: string;
  macAddress: string;
  /** The host's address on the TAP: the guest's default route and DNS resolver. */
  gateway: string;
  guest: string;
  prefix: number;
}

export function addressingForSlot(range: Ipv4Cidr, slot: number): VmAddressing {
  const network = range.network + slot * ADDRESSES_PER_VM;
  return {
    slot,
    tapDevice: `${TAP_PREFIX}${slot}`,
    // 02 marks a locally administered unicast address; 68:74 is "ht".
    macAddress: ['02', '68', '74', ...[16, 8, 0].map((shift) => hexByte(slot >>> shift))].join(':'),
    gateway: formatIpv4(network + 1),
    guest: formatIpv4(network + 2),
    prefix: VM_SUBNET_PREFIX,
  };
}

/** Returns the slot whose /30 contains the address, or null when it is outside the range. */
export function slotOfAddress(range: Ipv4Cidr, address: number): number | null {
  if (!cidrContains(range, address)) return null;
  return Math.floor((address - range.network) / ADDRESSES_PER_VM);
}

/**
 * Hands out one /30 per VM from a range. Slots are taken round robin, so a freed slot is
 * reused as late as possible and conntrack entries of its last VM have time to expire.
 */
export class AddressPool {
  private readonly used = new Set<number>();
  private next = 0;
  readonly capacity: number;

  constructor(readonly range: Ipv4Cidr) {
    if (range.prefix > VM_SUBNET_PREFIX) {
      throw new Error(
        `The address pool must be a /${VM_SUBNET_PREFIX} or larger; got /${range.prefix}.`,
      );
    }
    this.capacity = 2 ** (VM_SUBNET_PREFIX - range.prefix);
  }

  /** Throws capacity_exceeded when every slot is in use. */
  allocate(): VmAddressing {
    for (let tried = 0; tried < this.capacity; tried++) {
      const slot = (this.next + tried) % this.capacity;
      if (!this.used.has(slot)) {
        this.used.add(slot);
        this.next = (slot + 1) % this.capacity;
        return addressingForSlot(this.range, slot);
      }
    }
    throw new HearthError(
      'capacity_exceeded',
      `All ${this.capacity} VM addresses of the egress pool are in use; close a session or ` +
        'configure a larger HEARTH_EGRESS_POOL.',
    );
  }

  release(slot: number): void {
    this.used.delete(slot);
  }

  slotsInUse(): number[] {
    return [...this.used].sort((a, b) => a - b);
  }
}

function hexByte(value: number): string {
  return (value & 255).toString(16).padStart(2, '0');
}
