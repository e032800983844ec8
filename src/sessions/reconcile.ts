import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { removeRunDir } from '../vmm/qemu.js';

/**
 * Removes what an earlier hearthd left behind in runRoot after a crash or kill -9: each
 * VM's run directory (sockets, scratch disk, logs) and its VMM process. A process is killed
 * only when its command line names that run directory, so a recycled pid is left alone.
 */
export async function reconcileRunRoot(runRoot: string, logger: Logger): Promise<number> {
  let entries: string[];
  try {
    entries = await readdir(runRoot);
  } catch {
    return 0;
  }
  for (const entry of entries) {
    const runDir = join(runRoot, entry);
    // qemu.pid is written at spawn, vmm.pid once any driver has started the VM.
    const pid =
      (await readPid(join(runDir, 'vmm.pid'))) ?? (await readPid(join(runDir, 'qemu.pid')));
    if (pid !== null && (await commandLineMentions(pid, runDir))) {
      try {
        process.kill(pid, 'SIGKILL');
        await waitForExit(pid);
      } catch {
        // it exited on its own
      }
    }
    await removeRunDir(runDir);
    logger.warn({ vmId: entry, pid }, 'removed a VM left behind by an earlier hearthd');
  }
  return entries.length;
}

async function readPid(path: string): Promise<number | null> {
  try {
    const pid = Number.parseInt(await readFile(path, 'utf8'), 10);
    return Number.isInteger(pid) && pid > 1 ? pid : null;
  } catch {
    return null;
  }
}

async function commandLineMentions(pid: number, runDir: string): Promise<boolean> {
  try {
    const commandLine = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    return commandLine.includes(runDir);
  } catch {
    return false;
  }
}

async function waitForExit(pid: number): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
