// IPv4 addresses as unsigned 32-bit integers, and CIDR ranges over them.

export interface Ipv4Cidr {
  /** The first address of the range, with the host bits cleared. */
  network: number;
  /** Prefix length, 0 to 32. */
  prefix: number;
}

const DOTTED_QUAD = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** Parses a dotted-quad address; returns null for anything else, IPv6 included. */
export function parseIpv4(text: string): number | null {
  const match = DOTTED_QUAD.exec(text);
  if (!match) return null;
  let value = 0;
  for (const part of match.slice(1)) {
    // Leading zeros are rejected because some parsers read them as octal.
    if (part.length > 1 && part.startsWith('0')) return null;
    const octet = Number(part);
    if (octet > 255) return null;
    value = value * 256 + octet;
  }
  return value;
}

export function formatIpv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join('.');
}

export function prefixMask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/**
 * Parses `a.b.c.d/n`, or a bare address as a /32. Host bits below the prefix are cleared,
 * so 10.1.2.3/8 becomes 10.0.0.0/8. Throws an Error that names the text when it is invalid.
 */
export function parseIpv4Cidr(text: string): Ipv4Cidr {
  const [addressText = '', prefixText, extra] = text.trim().split('/');
  const address = parseIpv4(addressText);
  const prefix = prefixText === undefined ? 32 : Number(prefixText);
  if (
    address === null ||
    extra !== undefined ||
    (prefixText !== undefined && !/^\d{1,2}$/.test(prefixText)) ||
    prefix > 32
  ) {
    throw new Error(`"${text}" is not an IPv4 address or CIDR range such as 203.0.113.0/24.`);
  }
  return { network: (address & prefixMask(prefix)) >>> 0, prefix };
}

export function formatCidr(cidr: Ipv4Cidr): string {
  return `${formatIpv4(cidr.network)}/${cidr.prefix}`;
}

export function cidrContains(cidr: Ipv4Cidr, address: number): boolean {
  return (address & prefixMask(cidr.prefix)) >>> 0 === cidr.network;
}

export function cidrsOverlap(a: Ipv4Cidr, b: Ipv4Cidr): boolean {
  const shorter = a.prefix <= b.prefix ? a : b;
  const longer = shorter === a ? b : a;
  return cidrContains(shorter, longer.network);
}

/**
 * Drops ranges contained in other ranges of the list and sorts the rest, so that an nft
 * interval set receives no overlapping elements.
 */
export function mergeCidrs(cidrs: readonly Ipv4Cidr[]): Ipv4Cidr[] {
  const byPrefix = [...cidrs].sort((a, b) => a.prefix - b.prefix || a.network - b.network);
  const kept: Ipv4Cidr[] = [];
  for (const cidr of byPrefix) {
    if (!kept.some((wider) => cidrContains(wider, cidr.network) && wider.prefix <= cidr.prefix)) {
      kept.push(cidr);
    }
  }
  return kept.sort((a, b) => a.network - b.network);
}
