import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';

/** The owner of sessions made over the local Unix socket, where no API key is needed. */
export const LOCAL_OWNER = 'local';

export interface ApiKeyRecord {
  id: string;
  name: string;
  createdAt: string;
  revokedAt: string | null;
}

/** The durable record of a session: enough to answer for it after hearthd restarts. */
export interface SessionRecord {
  id: string;
  owner: string;
  state: string;
  closeReason: string | null;
  vmId: string | null;
  createdAt: string;
  expiresAt: string;
  /** Resources and policy as requested, as JSON. Env values are not stored. */
  optionsJson: string;
  /** The VM run directory of the hearthd that owns the session. */
  runRoot: string;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  key_sha256 TEXT NOT NULL UNIQUE,
  created_at TEXT NOT NULL,
  revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  state TEXT NOT NULL,
  close_reason TEXT,
  vm_id TEXT,
  created_at TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  options_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_owner ON sessions (owner, state);
`;

/** hearthd's SQLite database: API keys (stored as SHA-256 hashes) and session records. */
export class Store {
  private readonly db: Database.Database;

  constructor(path: string) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(SCHEMA);
    const columns = this.db.prepare('PRAGMA table_info(sessions)').all() as { name: string }[];
    if (!columns.some((column) => column.name === 'run_root')) {
      this.db.exec("ALTER TABLE sessions ADD COLUMN run_root TEXT NOT NULL DEFAULT ''");
    }
  }

  close(): void {
    this.db.close();
  }

  /** Creates a key and returns it in full; only its hash is stored, so it is shown once. */
  createApiKey(name: string): { record: ApiKeyRecord; key: string } {
    const key = `hk_${randomBytes(32).toString('base64url')}`;
    const record: ApiKeyRecord = {
      id: `key_${randomBytes(6).toString('hex')}`,
      name,
      createdAt: new Date().toISOString(),
      revokedAt: null,
    };
    this.db
      .prepare('INSERT INTO api_keys (id, name, key_sha256, created_at) VALUES (?, ?, ?, ?)')
      .run(record.id, record.name, hashKey(key), record.createdAt);
    return { record, key };
  }

  listApiKeys(): ApiKeyRecord[] {
    return this.db
      .prepare(
        `SELECT id, name, created_at AS createdAt, revoked_at AS revokedAt
         FROM api_keys ORDER BY created_at`,
      )
      .all() as ApiKeyRecord[];
  }

  /** Returns false when no unrevoked key has that id. */
  revokeApiKey(id: string): boolean {
    const result = this.db
      .prepare('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL')
      .run(new Date().toISOString(), id);
    return result.changes > 0;
  }

  /** Returns the id of the unrevoked key, or null. */
  authenticate(key: string): string | null {
    const row = this.db
      .prepare('SELECT id FROM api_keys WHERE key_sha256 = ? AND revoked_at IS NULL')
      .get(hashKey(key)) as { id: string } | undefined;
    return row?.id ?? null;
  }

  insertSession(record: SessionRecord): void {
    this.db
      .prepare(
        `INSERT INTO sessions
         (id, owner, state, close_reason, vm_id, created_at, expires_at, options_json, run_root)
         VALUES (@id, @owner, @state, @closeReason, @vmId, @createdAt, @expiresAt, @optionsJson,
           @runRoot)`,
      )
      .run(record);
  }

  updateSession(
    id: string,
    fields: { state: string; closeReason?: string | null; vmId?: string | null },
  ): void {
    this.db
      .prepare(
        `UPDATE sessions SET state = @state,
           close_reason = COALESCE(@closeReason, close_reason),
           vm_id = COALESCE(@vmId, vm_id)
         WHERE id = @id`,
      )
      .run({
        id,
        state: fields.state,
        closeReason: fields.closeReason ?? null,
        vmId: fields.vmId ?? null,
      });
  }

  getSession(id: string): SessionRecord | null {
    const row = this.db
      .prepare(
        `SELECT id, owner, state, close_reason AS closeReason, vm_id AS vmId,
           created_at AS createdAt, expires_at AS expiresAt, options_json AS optionsJson,
           run_root AS runRoot
         FROM sessions WHERE id = ?`,
      )
      .get(id) as SessionRecord | undefined;
    return row ?? null;
  }

  /**
   * Marks the sessions that were live in this run directory when its hearthd stopped as
   * lost, since a restarted hearthd cannot reattach to their VMs. Sessions of other hearthds
   * sharing the database are left alone. Returns the ids marked.
   */
  markLiveSessionsLost(runRoot: string): string[] {
    const live = `state IN ('booting', 'ready', 'busy', 'closing') AND run_root = ?`;
    const ids = this.db.prepare(`SELECT id FROM sessions WHERE ${live}`).all(runRoot) as {
      id: string;
    }[];
    this.db
      .prepare(`UPDATE sessions SET state = 'closed', close_reason = 'lost' WHERE ${live}`)
      .run(runRoot);
    return ids.map((row) => row.id);
  }
}

export function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}
