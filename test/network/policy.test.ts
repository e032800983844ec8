import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HearthError } from '../../src/errors.js';
import {
  formatDomainPattern,
  matchesDomain,
  normalizeDomainName,
  parseDomainPattern,
} from '../../src/network/domains.js';
import { formatCidr, parseIpv4Cidr } from '../../src/network/ipv4.js';
import { resolvePolicy, MAX_POLICY_ENTRIES } from '../../src/network/policy.js';

const policy = (fields: Partial<Parameters<typeof resolvePolicy>[0]>) => ({
  allowDomains: [],
  allowCidrs: [],
  allowPackageManagers: false,
  ...fields,
});

const invalidPolicy = (pattern: RegExp) => (error: unknown) =>
  error instanceof HearthError &&
  error.code === 'invalid_egress_policy' &&
  error.status === 400 &&
  pattern.test(error.message);

describe('domain names', () => {
  it('normalizes case, trailing dots and unicode', () => {
    assert.equal(normalizeDomainName('Example.ORG.'), 'example.org');
    assert.equal(normalizeDomainName('bücher.example'), 'xn--bcher-kva.example');
    assert.equal(normalizeDomainName('_dmarc.example.org'), '_dmarc.example.org');
  });

  it('rejects IP literals and malformed names', () => {
    for (const text of [
      '',
      '.',
      'a..b',
      '-a.example',
      'a-.example',
      '192.0.2.1',
      'a b.example',
      'x'.repeat(64) + '.org',
      '[::1]',
      'allowed.test:443',
      'user@allowed.test',
    ]) {
      assert.equal(normalizeDomainName(text), null, text);
    }
  });

  it('matches exact names only exactly', () => {
    const patterns = [parseDomainPattern('allowed.test')];
    assert.ok(matchesDomain(patterns, 'allowed.test'));
    assert.ok(!matchesDomain(patterns, 'www.allowed.test'));
    assert.ok(!matchesDomain(patterns, 'notallowed.test'));
  });

  it('matches wildcards at any depth below, but not the name itself', () => {
    const patterns = [parseDomainPattern('*.example.org')];
    assert.ok(matchesDomain(patterns, 'a.example.org'));
    assert.ok(matchesDomain(patterns, 'a.b.example.org'));
    assert.ok(!matchesDomain(patterns, 'example.org'));
    assert.ok(!matchesDomain(patterns, 'badexample.org'));
    assert.ok(!matchesDomain(patterns, 'example.org.evil.test'));
  });

  it('formats patterns back', () => {
    assert.equal(formatDomainPattern(parseDomainPattern('*.Example.org')), '*.example.org');
  });

  it('rejects a bare wildcard and IP addresses as patterns', () => {
    for (const text of ['*', '*.', '*.*.example.org', 'a.*.example.org', '10.0.0.1']) {
      assert.throws(() => parseDomainPattern(text), /is not a domain name or wildcard/, text);
    }
  });
});

describe('egress policy resolution', () => {
  it('parses domains and merges CIDRs', () => {
    const resolved = resolvePolicy(
      policy({
        allowDomains: ['Allowed.test', '*.wild.test', 'allowed.test'],
        allowCidrs: ['10.0.0.0/8', '10.1.0.0/16'],
      }),
      null,
    );
    assert.deepEqual(resolved.domains.map(formatDomainPattern), ['allowed.test', '*.wild.test']);
    assert.deepEqual(resolved.cidrs.map(formatCidr), ['10.0.0.0/8']);
  });

  it('rejects IPv6 ranges with the reason', () => {
    assert.throws(
      () => resolvePolicy(policy({ allowCidrs: ['2001:db8::/32'] }), null),
      invalidPolicy(/IPv6/),
    );
  });

  it('rejects bad entries naming the list', () => {
    assert.throws(
      () => resolvePolicy(policy({ allowCidrs: ['10.0.0.0/40'] }), null),
      invalidPolicy(/^allow_cidrs: "10\.0\.0\.0\/40"/),
    );
    assert.throws(
      () => resolvePolicy(policy({ allowDomains: ['http://example.org'] }), null),
      invalidPolicy(/^allow_domains: "http:\/\/example\.org"/),
    );
  });

  it('rejects more entries than the maximum', () => {
    const allowCidrs = Array.from(
      { length: MAX_POLICY_ENTRIES + 1 },
      (_, i) => `10.0.${i % 256}.${i >> 8}`,
    );
    assert.throws(() => resolvePolicy(policy({ allowCidrs }), null), invalidPolicy(/at most/));
  });

  it('adds the preset only when asked', () => {
    const preset = {
      domains: [parseDomainPattern('pypi.test')],
      cidrs: [parseIpv4Cidr('192.0.2.80')],
    };
    const without = resolvePolicy(policy({ allowDomains: ['allowed.test'] }), preset);
    assert.deepEqual(without.domains.map(formatDomainPattern), ['allowed.test']);
    assert.deepEqual(without.cidrs, []);

    const withPreset = resolvePolicy(
      policy({ allowDomains: ['allowed.test'], allowPackageManagers: true }),
      preset,
    );
    assert.deepEqual(withPreset.domains.map(formatDomainPattern), ['allowed.test', 'pypi.test']);
    assert.deepEqual(withPreset.cidrs.map(formatCidr), ['192.0.2.80/32']);
  });

  it('rejects the preset when the host has no package index', () => {
    assert.throws(
      () => resolvePolicy(policy({ allowPackageManagers: true }), null),
      invalidPolicy(/no package index/),
    );
  });
});
