import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  DnsClass,
  DnsFormatError,
  DnsType,
  emptyResponse,
  encodeDnsMessage,
  Flags,
  parseDnsMessage,
  Rcode,
  rcodeOf,
  withId,
  type DnsMessage,
} from '../../src/network/dns-message.js';
import { chainAddresses } from '../../src/network/dns-proxy.js';
import { MAX_PINNED_ADDRESSES, MIN_PIN_SECONDS, PinTable } from '../../src/network/pins.js';

const query = (name: string, type: number = DnsType.A): DnsMessage => ({
  id: 0x1234,
  flags: Flags.RD,
  questions: [{ name, type, class: DnsClass.IN }],
  answers: [],
  authorities: [],
  additionals: [],
});

const aRecord = (name: string, address: string, ttl = 300) => ({
  name,
  type: DnsType.A,
  class: DnsClass.IN,
  ttl,
  data: Buffer.alloc(0),
  value: address,
});

const cname = (name: string, target: string) => ({
  name,
  type: DnsType.CNAME,
  class: DnsClass.IN,
  ttl: 300,
  data: Buffer.alloc(0),
  value: target,
});

describe('DNS messages', () => {
  it('round-trips a query and an answer', () => {
    const answer: DnsMessage = {
      ...query('www.allowed.test'),
      flags: Flags.QR | Flags.RD | Flags.RA,
      answers: [cname('www.allowed.test', 'cdn.test'), aRecord('cdn.test', '192.0.2.10', 42)],
    };
    const parsed = parseDnsMessage(encodeDnsMessage(answer));
    assert.equal(parsed.id, 0x1234);
    assert.deepEqual(parsed.questions, answer.questions);
    assert.equal(parsed.answers.length, 2);
    assert.equal(parsed.answers[0]!.value, 'cdn.test');
    assert.equal(parsed.answers[1]!.value, '192.0.2.10');
    assert.equal(parsed.answers[1]!.ttl, 42);
  });

  it('follows compression pointers', () => {
    // Header, question "a.test" at offset 12, answer whose name points back to it.
    const bytes = Buffer.concat([
      Buffer.from([0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]),
      Buffer.from([1, 0x61, 4, 0x74, 0x65, 0x73, 0x74, 0, 0, 1, 0, 1]),
      Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]),
    ]);
    const parsed = parseDnsMessage(bytes);
    assert.equal(parsed.answers[0]!.name, 'a.test');
    assert.equal(parsed.answers[0]!.value, '192.0.2.1');
  });

  it('rejects pointer loops and truncated messages', () => {
    const loop = Buffer.concat([
      Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
      Buffer.from([0xc0, 12, 0, 1, 0, 1]),
    ]);
    assert.throws(() => parseDnsMessage(loop), DnsFormatError);
    const full = encodeDnsMessage(query('allowed.test'));
    for (let length = 0; length < full.length; length++) {
      assert.throws(() => parseDnsMessage(full.subarray(0, length)), DnsFormatError, `${length}`);
    }
  });

  it('escapes dots and odd bytes inside labels', () => {
    // One label "allowed.test": it must not read as the two-label name allowed.test.
    const bytes = Buffer.concat([
      Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 12]),
      Buffer.from('allowed.test'),
      Buffer.from([0, 0, 1, 0, 1]),
    ]);
    assert.equal(parseDnsMessage(bytes).questions[0]!.name, 'allowed\\.test');
  });

  it('reads a TTL with the top bit set as zero', () => {
    const bytes = encodeDnsMessage({
      ...query('a.test'),
      answers: [aRecord('a.test', '192.0.2.1')],
    });
    bytes.writeUInt32BE(0x80000000, bytes.length - 10);
    assert.equal(parseDnsMessage(bytes).answers[0]!.ttl, 0);
  });

  it('builds empty answers that echo the question', () => {
    const response = parseDnsMessage(emptyResponse(query('other.test'), Rcode.NXDOMAIN));
    assert.equal(response.id, 0x1234);
    assert.ok(response.flags & Flags.QR);
    assert.ok(response.flags & Flags.RD);
    assert.equal(rcodeOf(response.flags), Rcode.NXDOMAIN);
    assert.deepEqual(response.questions, query('other.test').questions);
    assert.equal(response.answers.length, 0);
    assert.equal(withId(encodeDnsMessage(query('a.test')), 7).readUInt16BE(0), 7);
  });
});

describe('answer addresses', () => {
  it('takes A records of the name and its CNAME chain only', () => {
    const answer: DnsMessage = {
      ...query('www.allowed.test'),
      answers: [
        cname('WWW.allowed.test', 'edge.cdn.test'),
        cname('edge.cdn.test', 'node.cdn.test'),
        aRecord('node.cdn.test', '192.0.2.10', 30),
        aRecord('unrelated.test', '192.0.2.99'),
      ],
    };
    assert.deepEqual(chainAddresses(answer, 'www.allowed.test'), [
      { address: '192.0.2.10', ttlSeconds: 30 },
    ]);
  });
});

describe('pin table', () => {
  const now = 1_000_000;

  it('pins per name with a floor on the TTL', () => {
    const pins = new PinTable();
    const updates = pins.record('allowed.test', [{ address: '192.0.2.10', ttlSeconds: 5 }], now);
    assert.deepEqual(updates, [{ address: '192.0.2.10', timeoutSeconds: MIN_PIN_SECONDS }]);
    assert.ok(pins.isPinned('allowed.test', '192.0.2.10', now + 1000));
    assert.ok(!pins.isPinned('other.test', '192.0.2.10', now + 1000));
    assert.ok(!pins.isPinned('allowed.test', '192.0.2.11', now + 1000));
    assert.ok(!pins.isPinned('allowed.test', '192.0.2.10', now + MIN_PIN_SECONDS * 1000));
  });

  it('refreshes the set only when much of the timeout is used up', () => {
    const pins = new PinTable();
    const answer = [{ address: '192.0.2.10', ttlSeconds: 600 }];
    assert.equal(pins.record('a.test', answer, now)!.length, 1);
    assert.equal(pins.record('a.test', answer, now + 60_000)!.length, 0);
    assert.equal(pins.record('a.test', answer, now + 301_000)!.length, 1);
  });

  it('lets a second name share an address until the set entry expires', () => {
    const pins = new PinTable();
    pins.record('a.test', [{ address: '192.0.2.10', ttlSeconds: 600 }], now);
    const updates = pins.record('b.test', [{ address: '192.0.2.10', ttlSeconds: 900 }], now);
    assert.deepEqual(updates, []);
    assert.ok(pins.isPinned('b.test', '192.0.2.10', now + 599_000));
    assert.ok(!pins.isPinned('b.test', '192.0.2.10', now + 601_000));
  });

  it('refuses more than the maximum of live addresses', () => {
    const pins = new PinTable();
    const answers = Array.from({ length: MAX_PINNED_ADDRESSES }, (_, i) => ({
      address: `10.0.${i >> 8}.${i & 255}`,
      ttlSeconds: 300,
    }));
    assert.equal(pins.record('many.test', answers, now)!.length, MAX_PINNED_ADDRESSES);
    assert.equal(pins.record('one.test', [{ address: '192.0.2.1', ttlSeconds: 300 }], now), null);
    const later = now + 301_000;
    assert.equal(
      pins.record('one.test', [{ address: '192.0.2.1', ttlSeconds: 300 }], later)!.length,
      1,
    );
  });

  it('forgets updates that failed to apply', () => {
    const pins = new PinTable();
    const updates = pins.record('a.test', [{ address: '192.0.2.10', ttlSeconds: 300 }], now)!;
    pins.forget(updates);
    assert.ok(!pins.isPinned('a.test', '192.0.2.10', now + 1));
    assert.equal(
      pins.record('a.test', [{ address: '192.0.2.10', ttlSeconds: 300 }], now)!.length,
      1,
    );
  });
});
