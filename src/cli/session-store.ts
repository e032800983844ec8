import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

/** The CLI's current session, shared by every CLI invocation with the same HEARTH_HOME. */
export class CurrentSession {
  private readonly path: string;

  constructor(home: string) {
    this.path = join(home, 'cli', 'current-session');
  }

  async read(): Promise<string | null> {
    try {
      const id = (await readFile(this.path, 'utf8')).trim();
      return id || null;
    } catch {
      return null;
    }
  }

  async write(id: string): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true });
    await writeFile(this.path, id + '\n');
  }

  async clear(): Promise<void> {
    await rm(this.path, { force: true });
  }
}
