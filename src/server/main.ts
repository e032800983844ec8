// hearthd's entry point: `node dist/src/server/main.js`, or `hearth server run`.
import { hearthHome } from '../config.js';
import { HearthError } from '../errors.js';
import { configFromEnv, startHearthd } from './hearthd.js';

export async function runHearthd(): Promise<void> {
  const config = configFromEnv(hearthHome());
  let hearthd;
  try {
    hearthd = await startHearthd(config);
  } catch (error) {
    if (error instanceof HearthError) {
      config.logger.error({ code: error.code }, error.message);
      console.error(`hearthd: ${error.message}`);
      process.exit(error.code === 'already_running' ? 0 : 1);
    }
    throw error;
  }
  const stop = (signal: string) => {
    config.logger.info({ signal }, 'stopping');
    void hearthd.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await runHearthd();
}
