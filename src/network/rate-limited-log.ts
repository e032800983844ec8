import type { Logger } from 'pino';

// Enough to see that something is wrong; a guest that triggers more cannot fill the log.
const DEFAULT_MAX_PER_MINUTE = 10;

/**
 * Logs events that a guest can trigger, at most `maxPerMinute` a minute. The first entry
 * after a suppressed spell carries the number of entries suppressed before it.
 */
export class RateLimitedLog {
  private windowStart = 0;
  private count = 0;
  private suppressed = 0;

  constructor(
    private readonly logger: Logger,
    private readonly maxPerMinute = DEFAULT_MAX_PER_MINUTE,
  ) {}

  warn(fields: object, message: string): void {
    this.write('warn', fields, message);
  }

  info(fields: object, message: string): void {
    this.write('info', fields, message);
  }

  private write(level: 'info' | 'warn', fields: object, message: string): void {
    const now = Date.now();
    if (now - this.windowStart >= 60_000) {
      this.windowStart = now;
      this.count = 0;
    }
    if (this.count >= this.maxPerMinute) {
      this.suppressed += 1;
      return;
    }
    this.count += 1;
    const suppressed = this.suppressed;
    this.suppressed = 0;
    this.logger[level](suppressed > 0 ? { ...fields, suppressed } : fields, message);
  }
}
