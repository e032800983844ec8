// Validates a session's egress policy and turns it into what the host enforces.
import { HearthError } from '../errors.js';
import { mergeCidrs, parseIpv4Cidr, type Ipv4Cidr } from './ipv4.js';
import { parseDomainPattern, type DomainPattern } from './domains.js';
import type { EgressPolicy } from './types.js';

/** The names and ranges that the package-managers preset adds to a policy. */
export interface PresetAllowance {
  domains: DomainPattern[];
  cidrs: Ipv4Cidr[];
}

/** A policy in the form the ruleset, the DNS proxy and the HTTP/TLS proxy use. */
export interface ResolvedPolicy {
  cidrs: Ipv4Cidr[];
  domains: DomainPattern[];
}

// Each entry becomes an nft set element or a name the DNS proxy checks. A few hundred keep a
// ruleset update quick, and a longer list is better served by a wider CIDR or a wildcard.
export const MAX_POLICY_ENTRIES = 256;

/**
 * Checks every entry of a policy and merges in the preset when the policy enables it.
 * Throws invalid_egress_policy (HTTP 400) naming the first bad entry.
 */
export function resolvePolicy(
  policy: EgressPolicy,
  preset: PresetAllowance | null,
): ResolvedPolicy {
  if (policy.allowDomains.length + policy.allowCidrs.length > MAX_POLICY_ENTRIES) {
    throw invalid(
      `An egress policy may list at most ${MAX_POLICY_ENTRIES} domains and CIDR ranges ` +
        'together; use wildcards or wider ranges.',
    );
  }
  const domains: DomainPattern[] = [];
  for (const entry of policy.allowDomains) {
    try {
      domains.push(parseDomainPattern(entry));
    } catch (error) {
      throw invalid(`allow_domains: ${(error as Error).message}`);
    }
  }
  const cidrs: Ipv4Cidr[] = [];
  for (const entry of policy.allowCidrs) {
    if (entry.includes(':')) {
      throw invalid(
        `allow_cidrs: "${entry}" is an IPv6 range; hearth drops all IPv6 traffic from VMs, ` +
          'so only IPv4 ranges can be allowed.',
      );
    }
    try {
      cidrs.push(parseIpv4Cidr(entry));
    } catch (error) {
      throw invalid(`allow_cidrs: ${(error as Error).message}`);
    }
  }
  if (policy.allowPackageManagers) {
    if (!preset) {
      throw new HearthError(
        'invalid_egress_policy',
        'allow_package_managers was requested, but hearthd found no package index in the ' +
          "host's apt, pip or npm configuration; configure one, or set " +
          'HEARTH_EGRESS_PIP_INDEX_URL / HEARTH_EGRESS_NPM_REGISTRY / HEARTH_EGRESS_APT_URLS.',
        400,
      );
    }
    domains.push(...preset.domains);
    cidrs.push(...preset.cidrs);
  }
  return { cidrs: mergeCidrs(cidrs), domains: uniqueDomains(domains) };
}

function uniqueDomains(domains: DomainPattern[]): DomainPattern[] {
  const seen = new Set<string>();
  return domains.filter((domain) => {
    const key = `${domain.kind}:${domain.name}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function invalid(message: string): HearthError {
  return new HearthError('invalid_egress_policy', message, 400);
}
