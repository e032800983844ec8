// Destinations a VM never reaches, whatever its policy allows.
import { networkInterfaces } from 'node:os';
import { cidrContains, parseIpv4, parseIpv4Cidr, type Ipv4Cidr } from './ipv4.js';

/**
 * Always denied, before any allow rule. The host's own addresses are handled apart from this
 * list: traffic to them is delivered locally, and the input rules admit only the DNS proxy.
 */
export const ALWAYS_DENIED: readonly { cidr: string; reason: string }[] = [
  { cidr: '0.0.0.0/8', reason: '"this network"; 0.0.0.0 reaches the host itself on Linux' },
  { cidr: '127.0.0.0/8', reason: 'loopback' },
  { cidr: '169.254.0.0/16', reason: 'link-local, including cloud metadata at 169.254.169.254' },
  { cidr: '224.0.0.0/4', reason: 'multicast' },
  { cidr: '240.0.0.0/4', reason: 'reserved, and the limited broadcast address' },
];

/** The always-denied ranges plus the VM address pool (other VMs) and operator additions. */
export function deniedRanges(pool: Ipv4Cidr, extra: readonly Ipv4Cidr[]): Ipv4Cidr[] {
  return [...ALWAYS_DENIED.map((entry) => parseIpv4Cidr(entry.cidr)), pool, ...extra];
}

/**
 * Checks a destination the host-side proxy is about to connect to. The proxy's connections
 * leave from the host, so the VM rules do not cover them; this check does, including every
 * address currently assigned to one of the host's interfaces.
 */
export function isDeniedDestination(address: string, denied: readonly Ipv4Cidr[]): boolean {
  const value = parseIpv4(address);
  if (value === null) return true;
  if (denied.some((cidr) => cidrContains(cidr, value))) return true;
  return hostAddresses().has(address);
}

function hostAddresses(): Set<string> {
  const addresses = new Set<string>();
  for (const entries of Object.values(networkInterfaces())) {
    for (const entry of entries ?? []) addresses.add(entry.address);
  }
  return addresses;
}
