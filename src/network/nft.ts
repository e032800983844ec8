// Runs nft: applies scripts as transactions and reads the table back as JSON.
import { CommandError, runCommand } from './command.js';
import { TABLE } from './ruleset.js';

/** Applies a script with `nft -f`; the kernel commits all of it or none of it. */
export async function applyRuleset(script: string): Promise<void> {
  await runCommand('nft', ['-f', '-'], script);
}

/** Deletes hearth's table if it exists. */
export async function deleteTable(): Promise<void> {
  try {
    await runCommand('nft', ['delete', 'table', ...TABLE.split(' ')]);
  } catch (error) {
    if (!isMissing(error)) throw error;
  }
}

/** The names of hearth's table's chains, sets, maps and counters; null without a table. */
export interface TableListing {
  chains: string[];
  sets: string[];
  counters: string[];
  /** Keys of the dispatch maps (TAP names), by map name. */
  mapKeys: Map<string, string[]>;
}

export async function listTable(): Promise<TableListing | null> {
  let output: string;
  try {
    output = await runCommand('nft', ['-j', 'list', 'table', ...TABLE.split(' ')]);
  } catch (error) {
    if (isMissing(error)) return null;
    throw error;
  }
  return parseTableListing(output);
}

/** Parses `nft -j list table` output. */
export function parseTableListing(json: string): TableListing {
  const listing: TableListing = { chains: [], sets: [], counters: [], mapKeys: new Map() };
  const items = (JSON.parse(json) as { nftables?: Record<string, NftObject>[] }).nftables ?? [];
  for (const item of items) {
    if (item.chain) listing.chains.push(item.chain.name);
    if (item.counter) listing.counters.push(item.counter.name);
    if (item.set) listing.sets.push(item.set.name);
    if (item.map) {
      const keys = (item.map.elem ?? [])
        .map((element) => (Array.isArray(element) ? element[0] : undefined))
        .filter((key): key is string => typeof key === 'string');
      listing.mapKeys.set(item.map.name, keys);
    }
  }
  return listing;
}

interface NftObject {
  name: string;
  packets?: number;
  elem?: unknown[];
}

/** Reads a named counter's packet count; 0 when it does not exist. */
export async function readCounterPackets(name: string): Promise<number> {
  let output: string;
  try {
    output = await runCommand('nft', ['-j', 'list', 'counter', ...TABLE.split(' '), name]);
  } catch (error) {
    if (isMissing(error)) return 0;
    throw error;
  }
  return parseCounterPackets(output);
}

export function parseCounterPackets(json: string): number {
  const items = (JSON.parse(json) as { nftables?: Record<string, NftObject>[] }).nftables ?? [];
  for (const item of items) {
    if (item.counter) return item.counter.packets ?? 0;
  }
  return 0;
}

function isMissing(error: unknown): boolean {
  return error instanceof CommandError && /No such file or directory/.test(error.stderr);
}
