import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isHealthy } from './client.js';

// Closing sessions stops each VM within its 3 s grace, so 30 s covers a busy server.
const STOP_TIMEOUT_MS = 30_000;

/** Stops the local hearthd with SIGTERM and waits until it is gone. Returns false when
 * none was running. */
export async function stopLocalDaemon(home: string): Promise<boolean> {
  const socketPath = join(home, 'hearthd.sock');
  const pid = await readDaemonPid(socketPath);
  if (pid === null) return false;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return false;
  }
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0);
    } catch {
      return true;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return !(await isHealthy({ socketPath }));
}

/** Reads hearthd's pid file, trusting it only while that pid still runs hearthd. */
async function readDaemonPid(socketPath: string): Promise<number | null> {
  try {
    const pid = Number.parseInt(await readFile(`${socketPath}.pid`, 'utf8'), 10);
    const commandLine = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    return commandLine.includes('server/main.js') || commandLine.includes('hearth') ? pid : null;
  } catch {
    return null;
  }
}
