// TAP devices on the host, one per VM, and the sysctls around them.
import { readFile, writeFile } from 'node:fs/promises';
import { CommandError, runCommand } from './command.js';
import { TAP_PREFIX } from './pool.js';

/**
 * Creates a persistent TAP with the gateway address, IPv6 off and the link up. QEMU opens
 * it by name. On failure nothing is left behind.
 */
export async function createTap(name: string, gatewayCidr: string): Promise<void> {
  await runCommand('ip', ['tuntap', 'add', 'dev', name, 'mode', 'tap']);
  try {
    // Without IPv6 on the TAP the host neither answers the guest over IPv6 (no link-local
    // address, no neighbour discovery) nor accepts its IPv6 packets at all.
    await writeSysctl(`net/ipv6/conf/${name}/disable_ipv6`, '1').catch(ignoreMissing);
    await runCommand('ip', ['addr', 'add', gatewayCidr, 'dev', name]);
    await runCommand('ip', ['link', 'set', 'dev', name, 'up']);
  } catch (error) {
    await deleteTap(name);
    throw error;
  }
}

/** Deletes a TAP; a device that is already gone counts as deleted. */
export async function deleteTap(name: string): Promise<void> {
  try {
    await runCommand('ip', ['link', 'del', 'dev', name]);
  } catch (error) {
    if (error instanceof CommandError && /Cannot find device/.test(error.stderr)) return;
    throw error;
  }
}

/** Names of tun/tap devices called hearth<number>: the ones this service creates. */
export async function listHearthTaps(): Promise<string[]> {
  const output = await runCommand('ip', ['-d', '-j', 'link', 'show']);
  return parseHearthTaps(output);
}

export function parseHearthTaps(json: string): string[] {
  const links = JSON.parse(json) as { ifname?: string; linkinfo?: { info_kind?: string } }[];
  const pattern = new RegExp(`^${TAP_PREFIX}\\d+$`);
  return links
    .filter((link) => pattern.test(link.ifname ?? '') && link.linkinfo?.info_kind === 'tun')
    .map((link) => link.ifname!);
}

/** Lists the IPv4 routes of the main table as destination CIDRs ("default" for 0/0). */
export async function listRouteDestinations(): Promise<{ dst: string; dev: string }[]> {
  const output = await runCommand('ip', ['-4', '-j', 'route', 'show']);
  return (JSON.parse(output) as { dst: string; dev: string }[]).map((route) => ({
    dst: route.dst,
    dev: route.dev,
  }));
}

export async function readSysctl(path: string): Promise<string> {
  return (await readFile(`/proc/sys/${path}`, 'utf8')).trim();
}

export async function writeSysctl(path: string, value: string): Promise<void> {
  await writeFile(`/proc/sys/${path}`, value);
}

function ignoreMissing(error: unknown): void {
  if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
}
