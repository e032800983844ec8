import type { Logger } from 'pino';
import type { VmShape } from './snapshots.js';
import type { BootedVm } from './vm.js';

export interface WarmPoolOptions {
  /** VMs kept ready; 0 turns the pool off. */
  size: number;
  shape: VmShape;
  /** Starts one VM for the pool, from a snapshot when there is one. */
  startVm: () => Promise<{ booted: BootedVm; path: 'snapshot' | 'boot' }>;
  logger: Logger;
}

// After a failed start, wait this long before trying again, so a broken image does not spin.
const RETRY_DELAY_MS = 5_000;
// A claimed VM is replaced this long after take(), once its session's first call is done.
const REFILL_DELAY_MS = 200;

/**
 * Keeps `size` idle VMs of one shape ready and refills in the background. take() hands each
 * VM out at most once: it is removed from the pool before it is returned.
 */
export class WarmPool {
  private readonly ready: BootedVm[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private starting = 0;
  private closed = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private refillTimer: NodeJS.Timeout | null = null;

  constructor(private readonly options: WarmPoolOptions) {}

  get shape(): VmShape {
    return this.options.shape;
  }

  get idleCount(): number {
    return this.ready.length;
  }

  fits(shape: VmShape): boolean {
    const own = this.options.shape;
    return (
      shape.cpuCount === own.cpuCount &&
      shape.memoryMib === own.memoryMib &&
      shape.diskMib === own.diskMib
    );
  }

  /**
   * Returns a ready VM, or null when none is idle. The refill starts a moment later, so
   * that starting its VM does not compete for the host's CPU with the claiming session's
   * greeting and first call.
   */
  take(): BootedVm | null {
    const booted = this.ready.shift() ?? null;
    if (!this.refillTimer) {
      this.refillTimer = setTimeout(() => {
        this.refillTimer = null;
        this.refill();
      }, REFILL_DELAY_MS);
      this.refillTimer.unref();
    }
    return booted;
  }

  /** Starts VMs until the pool is full. */
  refill(): void {
    while (!this.closed && this.ready.length + this.starting < this.options.size) {
      this.starting += 1;
      const start = this.startOne().finally(() => this.inFlight.delete(start));
      this.inFlight.add(start);
    }
  }

  /** Stops refilling and destroys every idle VM, waiting for VMs still starting. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.refillTimer) clearTimeout(this.refillTimer);
    // A VM that finishes starting after this point destroys itself in startOne().
    await Promise.allSettled([...this.inFlight]);
    const idle = this.ready.splice(0);
    await Promise.allSettled(idle.map((booted) => booted.destroy()));
  }

  private async startOne(): Promise<void> {
    try {
      const { booted, path } = await this.options.startVm();
      try {
        await warmUp(booted);
      } catch (error) {
        await booted.destroy();
        throw error;
      }
      if (this.closed) {
        await booted.destroy();
        return;
      }
      this.ready.push(booted);
      // An idle VM that dies is dropped, so take() never returns a dead one.
      void booted.vm.exited.then(() => {
        const index = this.ready.indexOf(booted);
        if (index >= 0) {
          this.ready.splice(index, 1);
          this.options.logger.warn({ vmId: booted.vm.vmId }, 'an idle pool VM exited');
          void booted.destroy();
          this.refill();
        }
      });
      this.options.logger.info(
        { vmId: booted.vm.vmId, path, startMs: Math.round(booted.bootMs) },
        'pool VM ready',
      );
    } catch (error) {
      this.options.logger.warn({ err: (error as Error).message }, 'pool VM failed to start');
      if (!this.closed) {
        this.retryTimer = setTimeout(() => this.refill(), RETRY_DELAY_MS);
        this.retryTimer.unref();
      }
    } finally {
      this.starting -= 1;
    }
  }
}

/**
 * Runs the greeting and one short call in each language on a pool VM before it counts as
 * ready. Under TCG a restored VM starts with QEMU's translation cache empty, so its first
 * calls pay for translating the agent's, Python's and Bash's code again (50-100 ms on the
 * development machine). The pool pays that in the background instead of the session.
 * The claim greets the VM again, which gives it the session's env, clock and entropy and
 * numbers its Python cells from 1.
 */
async function warmUp(booted: BootedVm): Promise<void> {
  await booted.agent.hello({});
  const calls = [
    { language: 'python', code: 'print(1)' },
    // `ip` is what the agent runs to configure eth0 when a network session claims the VM.
    { language: 'bash', code: 'ip link show dev lo >/dev/null && echo 1' },
  ] as const;
  for (const call of calls) {
    const { result } = await booted.agent.execute({
      ...call,
      timeout_seconds: 60,
      env: {},
      cwd: null,
      output_limit_bytes: 1024,
    });
    if (result.status !== 'ok') {
      throw new Error(`the pool VM's ${call.language} warm-up call ended with ${result.status}`);
    }
  }
}
