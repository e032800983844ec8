import { homedir } from 'node:os';
import { join } from 'node:path';

/** The state directory: images, caches, logs, sockets and the session database. */
export function hearthHome(): string {
  return process.env.HEARTH_HOME ?? join(homedir(), '.hearth');
}

/** The root of this checkout, where image/ and guest/ live. */
export function projectRoot(): string {
  return new URL('../../', import.meta.url).pathname;
}
