// Domain names in allow lists: exact names ("example.org") and wildcards ("*.example.org").
import { domainToASCII } from 'node:url';

export interface DomainPattern {
  /** "exact" matches the name only; "wildcard" matches names below it, at any depth. */
  kind: 'exact' | 'wildcard';
  /** Lower-case ASCII (punycode) name without a trailing dot. */
  name: string;
}

const LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;
// RFC 1035 limits a name to 255 octets on the wire, which is 253 characters in text form.
const MAX_NAME_LENGTH = 253;

/**
 * Returns the canonical form of a host name (lower case, punycode, no trailing dot), or
 * null when it is not a valid DNS host name, e.g. an IP literal or a name with empty labels.
 */
export function normalizeDomainName(text: string): string | null {
  const trimmed = text.endsWith('.') ? text.slice(0, -1) : text;
  if (trimmed === '' || trimmed.length > MAX_NAME_LENGTH) return null;
  const ascii = /^[\x21-\x7e]+$/.test(trimmed) ? trimmed.toLowerCase() : domainToASCII(trimmed);
  if (ascii === '' || ascii.length > MAX_NAME_LENGTH) return null;
  const labels = ascii.split('.');
  if (!labels.every((label) => LABEL.test(label))) return null;
  // An all-numeric last label makes it an IPv4 literal, which is never a domain here.
  if (/^\d+$/.test(labels[labels.length - 1] ?? '')) return null;
  return ascii;
}

/** Parses one allow-list entry. Throws an Error that says what a valid entry looks like. */
export function parseDomainPattern(text: string): DomainPattern {
  const wildcard = text.startsWith('*.');
  const name = normalizeDomainName(wildcard ? text.slice(2) : text);
  if (name === null) {
    throw new Error(
      `"${text}" is not a domain name or wildcard; use a name such as example.org, or ` +
        '*.example.org for every name below it. IP addresses belong in allow_cidrs.',
    );
  }
  return { kind: wildcard ? 'wildcard' : 'exact', name };
}

/** Tells whether a canonical name (see normalizeDomainName) matches any of the patterns. */
export function matchesDomain(patterns: readonly DomainPattern[], name: string): boolean {
  return patterns.some((pattern) =>
    pattern.kind === 'exact' ? name === pattern.name : name.endsWith(`.${pattern.name}`),
  );
}

export function formatDomainPattern(pattern: DomainPattern): string {
  return pattern.kind === 'wildcard' ? `*.${pattern.name}` : pattern.name;
}
