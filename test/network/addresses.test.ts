import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HearthError } from '../../src/errors.js';
import {
  cidrContains,
  cidrsOverlap,
  formatCidr,
  formatIpv4,
  mergeCidrs,
  parseIpv4,
  parseIpv4Cidr,
} from '../../src/network/ipv4.js';
import { AddressPool, addressingForSlot, slotOfAddress } from '../../src/network/pool.js';

describe('IPv4 parsing', () => {
  it('round-trips dotted quads', () => {
    for (const text of ['0.0.0.0', '10.1.2.3', '255.255.255.255', '169.254.169.254']) {
      assert.equal(formatIpv4(parseIpv4(text)!), text);
    }
  });

  it('rejects malformed addresses', () => {
    for (const text of ['256.0.0.1', '1.2.3', '1.2.3.4.5', '01.2.3.4', '::1', 'a.b.c.d', '']) {
      assert.equal(parseIpv4(text), null, text);
    }
  });

  it('clears host bits of a CIDR', () => {
    assert.equal(formatCidr(parseIpv4Cidr('10.1.2.3/8')), '10.0.0.0/8');
    assert.equal(formatCidr(parseIpv4Cidr('192.0.2.7')), '192.0.2.7/32');
    assert.equal(formatCidr(parseIpv4Cidr('0.0.0.0/0')), '0.0.0.0/0');
  });

  it('rejects malformed CIDRs with a message naming them', () => {
    for (const text of ['10.0.0.0/33', '10.0.0.0/', '10.0.0.0/8/8', 'fd00::/8', '10.0.0.0/-1']) {
      assert.throws(() => parseIpv4Cidr(text), new RegExp(text.replace(/[/.]/g, '\\$&')));
    }
  });

  it('tests containment and overlap', () => {
    const ten = parseIpv4Cidr('10.0.0.0/8');
    assert.ok(cidrContains(ten, parseIpv4('10.255.0.1')!));
    assert.ok(!cidrContains(ten, parseIpv4('11.0.0.0')!));
    assert.ok(cidrsOverlap(ten, parseIpv4Cidr('10.9.0.0/16')));
    assert.ok(cidrsOverlap(parseIpv4Cidr('10.9.0.0/16'), ten));
    assert.ok(!cidrsOverlap(ten, parseIpv4Cidr('172.16.0.0/12')));
    assert.ok(cidrContains(parseIpv4Cidr('0.0.0.0/0'), parseIpv4('203.0.113.9')!));
  });

  it('merges contained ranges away', () => {
    const merged = mergeCidrs(
      ['10.1.0.0/16', '10.0.0.0/8', '192.0.2.1', '10.1.2.3', '192.0.2.0/24'].map(parseIpv4Cidr),
    );
    assert.deepEqual(merged.map(formatCidr), ['10.0.0.0/8', '192.0.2.0/24']);
  });
});

describe('address pool', () => {
  const range = parseIpv4Cidr('100.96.0.0/28');

  it('gives each slot its own /30', () => {
    const first = addressingForSlot(range, 0);
    assert.equal(first.gateway, '100.96.0.1');
    assert.equal(first.guest, '100.96.0.2');
    assert.equal(first.tapDevice, 'hearth0');
    const third = addressingForSlot(range, 2);
    assert.equal(third.gateway, '100.96.0.9');
    assert.equal(third.guest, '100.96.0.10');
    assert.equal(third.macAddress, '02:68:74:00:00:02');
    assert.equal(slotOfAddress(range, parseIpv4('100.96.0.10')!), 2);
    assert.equal(slotOfAddress(range, parseIpv4('100.96.1.0')!), null);
  });

  it('never hands out a slot twice while it is in use', () => {
    const pool = new AddressPool(range);
    const slots = [pool.allocate(), pool.allocate(), pool.allocate(), pool.allocate()];
    assert.deepEqual(
      slots.map((slot) => slot.slot),
      [0, 1, 2, 3],
    );
    assert.equal(new Set(slots.map((slot) => slot.guest)).size, 4);
    assert.throws(
      () => pool.allocate(),
      (error) => error instanceof HearthError && error.code === 'capacity_exceeded',
    );
  });

  it('reuses freed slots round robin', () => {
    const pool = new AddressPool(range);
    const a = pool.allocate();
    const b = pool.allocate();
    pool.release(a.slot);
    assert.equal(pool.allocate().slot, 2, 'the next unused slot comes before the freed one');
    assert.equal(pool.allocate().slot, 3);
    assert.equal(pool.allocate().slot, a.slot);
    assert.deepEqual(pool.slotsInUse(), [0, 1, 2, 3]);
    pool.release(b.slot);
    assert.equal(pool.allocate().slot, b.slot);
  });

  it('rejects a range smaller than one VM subnet', () => {
    assert.throws(() => new AddressPool(parseIpv4Cidr('100.96.0.0/31')), /\/30 or larger/);
  });
});
