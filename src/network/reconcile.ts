// Removes TAPs and rules that an earlier hearthd left behind after a crash or kill -9.
import type { Logger } from 'pino';
import { applyRuleset, deleteTable, listTable, type TableListing } from './nft.js';
import { FORWARD_GUARD_CHAIN, TABLE } from './ruleset.js';
import { deleteTap, listHearthTaps } from './tap.js';

export interface StaleState {
  removedTaps: string[];
  /** The old table had the forwarding guard, so IPv4 forwarding was off before hearth. */
  forwardingWasGuarded: boolean;
}

/**
 * Deletes every hearth<N> TAP not in `activeTaps`. With no active TAPs the whole table goes
 * too; otherwise only the per-VM objects of slots that are not active.
 */
export async function removeStaleState(
  activeTaps: ReadonlySet<string>,
  activeSlots: ReadonlySet<number>,
  logger: Logger,
): Promise<StaleState> {
  const listing = await listTable();
  const forwardingWasGuarded = listing?.chains.includes(FORWARD_GUARD_CHAIN) ?? false;
  if (listing && activeSlots.size === 0) {
    await deleteTable();
    logger.warn('removed the nftables table of an earlier hearthd');
  } else if (listing) {
    const script = staleObjectsScript(listing, activeSlots, activeTaps);
    if (script) await applyRuleset(script);
  }

  const removedTaps: string[] = [];
  for (const tap of await listHearthTaps()) {
    if (activeTaps.has(tap)) continue;
    await deleteTap(tap);
    removedTaps.push(tap);
  }
  if (removedTaps.length > 0) {
    logger.warn({ taps: removedTaps }, 'removed TAP devices of an earlier hearthd');
  }
  return { removedTaps, forwardingWasGuarded };
}

/** An nft script deleting per-VM objects (vm<N>_*) and map entries of inactive VMs. */
export function staleObjectsScript(
  listing: TableListing,
  activeSlots: ReadonlySet<number>,
  activeTaps: ReadonlySet<string>,
): string {
  const stale = (name: string) => {
    const match = /^vm(\d+)_/.exec(name);
    return match !== null && !activeSlots.has(Number(match[1]));
  };
  const lines: string[] = [];
  for (const [map, keys] of listing.mapKeys) {
    for (const key of keys) {
      if (!activeTaps.has(key)) lines.push(`delete element ${TABLE} ${map} { "${key}" }`);
    }
  }
  for (const chain of listing.chains.filter(stale)) {
    lines.push(`flush chain ${TABLE} ${chain}`, `delete chain ${TABLE} ${chain}`);
  }
  for (const set of listing.sets.filter(stale)) lines.push(`delete set ${TABLE} ${set}`);
  for (const counter of listing.counters.filter(stale)) {
    lines.push(`delete counter ${TABLE} ${counter}`);
  }
  return lines.length > 0 ? lines.join('\n') + '\n' : '';
}
