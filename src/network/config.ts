// hearthd's egress settings, read from HEARTH_EGRESS* environment variables.
import { HearthError } from '../errors.js';
import { parseUpstream, type Upstream } from './dns-upstream.js';
import { parseIpv4Cidr, type Ipv4Cidr } from './ipv4.js';
import type { PresetOverrides } from './presets.js';

export interface EgressConfig {
  /** The range VM /30 subnets are taken from. */
  pool: Ipv4Cidr;
  /** The resolver DNS proxies forward allowed queries to; null means the host's resolv.conf. */
  upstream: Upstream | null;
  /** Ranges denied to every VM on top of the built-in list (e.g. the host's LAN). */
  extraDeniedCidrs: Ipv4Cidr[];
  preset: PresetOverrides;
}

// CGNAT shared address space (RFC 6598) is not routed on the internet and rarely used on a
// host's own networks. A /16 has room for 16384 VMs. Hosts on Tailscale, or behind a carrier
// that uses this range, should pick another one.
export const DEFAULT_POOL = '100.96.0.0/16';

/** Returns null unless HEARTH_EGRESS is "on". Throws invalid_config for a bad value. */
export function egressConfigFromEnv(env: NodeJS.ProcessEnv): EgressConfig | null {
  const switchValue = (env.HEARTH_EGRESS ?? 'off').toLowerCase();
  if (switchValue === 'off' || switchValue === '') return null;
  if (switchValue !== 'on') {
    throw configError(`HEARTH_EGRESS must be "on" or "off", not "${env.HEARTH_EGRESS}".`);
  }
  return {
    pool: parse('HEARTH_EGRESS_POOL', env.HEARTH_EGRESS_POOL ?? DEFAULT_POOL, parseIpv4Cidr),
    upstream: env.HEARTH_EGRESS_DNS_UPSTREAM
      ? parse('HEARTH_EGRESS_DNS_UPSTREAM', env.HEARTH_EGRESS_DNS_UPSTREAM, parseUpstream)
      : null,
    extraDeniedCidrs: list(env.HEARTH_EGRESS_DENY_CIDRS).map((cidr) =>
      parse('HEARTH_EGRESS_DENY_CIDRS', cidr, parseIpv4Cidr),
    ),
    preset: {
      pipIndexUrls: optionalList(env.HEARTH_EGRESS_PIP_INDEX_URL),
      npmRegistry:
        env.HEARTH_EGRESS_NPM_REGISTRY === undefined
          ? undefined
          : env.HEARTH_EGRESS_NPM_REGISTRY || null,
      aptUrls: optionalList(env.HEARTH_EGRESS_APT_URLS),
      extraDomains: list(env.HEARTH_EGRESS_PACKAGE_DOMAINS),
    },
  };
}

/** Splits a comma- or space-separated list; unset or empty gives []. */
function list(value: string | undefined): string[] {
  return (value ?? '').split(/[\s,]+/).filter(Boolean);
}

/** Like list, but unset gives undefined, so that discovery runs. */
function optionalList(value: string | undefined): string[] | undefined {
  return value === undefined ? undefined : list(value);
}

function parse<T>(name: string, value: string, parser: (text: string) => T): T {
  try {
    return parser(value);
  } catch (error) {
    throw configError(`${name}: ${(error as Error).message}`);
  }
}

function configError(message: string): HearthError {
  return new HearthError('invalid_config', message, 500);
}
