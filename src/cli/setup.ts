import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { ExecuteResult, Session } from '../api/schema.js';
import { HearthError } from '../errors.js';
import { ensureImages, IMAGE_STEP_COUNT, Progress } from '../image/index.js';
import { callApi, ensureLocalDaemon } from './client.js';
import { stopLocalDaemon } from './daemon.js';

const MAIN_JOB = 'import sys; print(sys.version)';

/**
 * `hearth setup`: builds (or finds cached) guest images, starts the local hearthd, which
 * probes KVM, and runs Python in a first microVM. Apt packages and the npm build are
 * setup.sh's part.
 */
export async function runSetup(home: string, args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { 'skip-main-job': { type: 'boolean', default: false } },
    strict: true,
  });
  const progress = new Progress({ total: IMAGE_STEP_COUNT + 2 });
  await ensureImages({ home, progress });

  const hearthdLog = join(home, 'logs', 'hearthd.log');
  const target = await progress.step('Starting hearthd', hearthdLog, async (context) => {
    // A hearthd from before this setup may run older images; start a fresh one.
    if (await stopLocalDaemon(home)) context.info('stopped the hearthd that was running');
    return ensureLocalDaemon(home);
  });
  if (values['skip-main-job']) return 0;

  const { session, result } = await progress.step(
    'Running Python in a microVM',
    undefined,
    async (context) => {
      const session = (await callApi(target, 'POST', '/v1/sessions', {})) as Session;
      context.info(
        `session ${session.id} booted in ${session.boot_ms} ms ` +
          `(accelerator ${session.accelerator}, guest kernel ${session.kernel_release})`,
      );
      try {
        const result = (await callApi(target, 'POST', `/v1/sessions/${session.id}/execute`, {
          code: MAIN_JOB,
        })) as ExecuteResult;
        return { session, result };
      } finally {
        await callApi(target, 'DELETE', `/v1/sessions/${session.id}`);
      }
    },
  );
  if (result.status !== 'ok') {
    throw new HearthError(
      'main_job_failed',
      `The first VM ran Python but it failed: ${result.error?.name}: ${result.error?.value}`,
    );
  }
  process.stdout.write(
    `\nPython inside a hearth microVM (kernel ${session.kernel_release}, ` +
      `${session.accelerator}):\n${result.stdout}\n` +
      `Next: npx hearth execute --code "print(1 + 1)"\n`,
  );
  return 0;
}
