import type { IncomingMessage } from 'node:http';
import { HearthError } from '../errors.js';
import { LOCAL_OWNER, type Store } from '../store/db.js';

/**
 * Resolves who sends a request. Over the Unix socket, whose file mode admits only its
 * owner, no key is needed and sessions belong to "local". Over TCP, a valid API key in
 * `Authorization: Bearer <key>` is required, and sessions belong to that key.
 */
export function authenticate(request: IncomingMessage, store: Store, requireKey: boolean): string {
  const header = request.headers.authorization;
  if (!header) {
    if (!requireKey) return LOCAL_OWNER;
    throw new HearthError(
      'unauthorized',
      'This hearthd needs an API key: send "Authorization: Bearer <key>" ' +
        '(create one with `hearth keys create`).',
      401,
    );
  }
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  const keyId = match ? store.authenticate(match[1]!) : null;
  if (!keyId) {
    throw new HearthError('unauthorized', 'The API key is invalid or revoked.', 401);
  }
  return keyId;
}
