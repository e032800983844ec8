// The addresses the DNS proxy gave one VM, by name, with their expiry.
import type { PinUpdate } from './ruleset.js';

// A TTL of a few seconds would let a pin lapse between the lookup and the connection.
export const MIN_PIN_SECONDS = 60;
// No session lives longer than a day, so no pin needs to either.
export const MAX_PIN_SECONDS = 86_400;
// Bounds the memory and the nft set of one VM; a guest that resolves more distinct
// addresses than this within their TTLs gets SERVFAIL until some expire.
export const MAX_PINNED_ADDRESSES = 4096;

export interface ResolvedAddress {
  address: string;
  ttlSeconds: number;
}

/**
 * Tracks which addresses each allowed name resolved to, and for how long. The nft set holds
 * the same addresses without names; the TLS/HTTP proxy asks this table whether an address
 * belongs to the name the client sent.
 */
export class PinTable {
  private readonly byName = new Map<string, Map<string, number>>();
  /** Expiry (ms since the epoch) of each address in the VM's nft set. */
  private readonly setExpiry = new Map<string, number>();

  /**
   * Records the addresses an answer gave for `name` and returns the nft set updates needed:
   * new addresses, and known ones whose set timeout is less than half the new one.
   * Returns null when the VM already has MAX_PINNED_ADDRESSES live addresses.
   */
  record(name: string, answers: readonly ResolvedAddress[], nowMs: number): PinUpdate[] | null {
    this.prune(nowMs);
    const fresh = answers.filter((answer) => !this.setExpiry.has(answer.address));
    if (this.setExpiry.size + fresh.length > MAX_PINNED_ADDRESSES) return null;

    const updates: PinUpdate[] = [];
    const addresses = this.byName.get(name) ?? new Map<string, number>();
    for (const answer of answers) {
      const timeoutSeconds = clampTtl(answer.ttlSeconds);
      const wantedExpiry = nowMs + timeoutSeconds * 1000;
      const setExpiry = this.setExpiry.get(answer.address);
      let effectiveExpiry = setExpiry ?? 0;
      if (setExpiry === undefined || setExpiry - nowMs < (timeoutSeconds * 1000) / 2) {
        updates.push({ address: answer.address, timeoutSeconds });
        this.setExpiry.set(answer.address, wantedExpiry);
        effectiveExpiry = wantedExpiry;
      }
      // The name's pin never outlasts the set element, or the proxy would accept a
      // destination that the nft rules no longer send to it.
      addresses.set(answer.address, Math.max(addresses.get(answer.address) ?? 0, effectiveExpiry));
    }
    if (addresses.size > 0) this.byName.set(name, addresses);
    return updates;
  }

  /** Forgets set updates that failed to apply, so that the next answer retries them. */
  forget(updates: readonly PinUpdate[]): void {
    for (const update of updates) this.setExpiry.delete(update.address);
  }

  isPinned(name: string, address: string, nowMs: number): boolean {
    const expiry = this.byName.get(name)?.get(address);
    return expiry !== undefined && expiry > nowMs && (this.setExpiry.get(address) ?? 0) > nowMs;
  }

  private prune(nowMs: number): void {
    for (const [address, expiry] of this.setExpiry) {
      if (expiry <= nowMs) this.setExpiry.delete(address);
    }
    for (const [name, addresses] of this.byName) {
      for (const [address, expiry] of addresses) {
        if (expiry <= nowMs) addresses.delete(address);
      }
      if (addresses.size === 0) this.byName.delete(name);
    }
  }
}

function clampTtl(ttlSeconds: number): number {
  return Math.min(MAX_PIN_SECONDS, Math.max(MIN_PIN_SECONDS, Math.floor(ttlSeconds)));
}
