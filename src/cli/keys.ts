import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { HearthError } from '../errors.js';
import { Store } from '../store/db.js';

/** `hearth keys create|list|revoke`: manages API keys in hearthd's database directly. */
export async function keysCommand(home: string, args: string[]): Promise<number> {
  const [action, ...rest] = args;
  const store = new Store(process.env.HEARTH_DB ?? join(home, 'hearth.db'));
  try {
    if (action === 'create') {
      const { values } = parseArgs({
        args: rest,
        options: { name: { type: 'string' } },
        strict: true,
      });
      if (!values.name) {
        throw new HearthError('invalid_arguments', 'Give the key a name with --name.', 2);
      }
      const { record, key } = store.createApiKey(values.name);
      process.stderr.write(`created ${record.id} (${record.name}); the key is shown only once:\n`);
      process.stdout.write(key + '\n');
      return 0;
    }
    if (action === 'list') {
      const keys = store.listApiKeys().map((key) => ({
        id: key.id,
        name: key.name,
        created_at: key.createdAt,
        revoked_at: key.revokedAt,
      }));
      process.stdout.write(JSON.stringify(keys, null, 2) + '\n');
      return 0;
    }
    if (action === 'revoke') {
      const id = rest[0];
      if (!id) throw new HearthError('invalid_arguments', 'Use: hearth keys revoke <id>.', 2);
      if (!store.revokeApiKey(id)) {
        throw new HearthError('key_not_found', `No active API key with id ${id}.`, 404);
      }
      process.stdout.write(`revoked ${id}\n`);
      return 0;
    }
    throw new HearthError('invalid_arguments', 'Use: hearth keys create|list|revoke.', 2);
  } finally {
    store.close();
  }
}
