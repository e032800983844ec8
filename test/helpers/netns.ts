// Network namespaces that tests create, use and always delete. Nothing here touches the
// root namespace's links, routes or nftables.
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command and returns its exit code and output; never rejects on a non-zero exit. */
export function run(
  command: string,
  args: string[],
  input?: string,
  timeoutMs = 60_000,
): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], timeout: timeoutMs });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('error', (error) => resolve({ code: -1, stdout, stderr: String(error) }));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? '');
  });
}

/** Runs a command and throws with its stderr unless it exits 0. */
export async function mustRun(command: string, args: string[], input?: string): Promise<string> {
  const result = await run(command, args, input);
  if (result.code !== 0) {
    throw new Error(`${command} ${args.join(' ')} failed (${result.code}): ${result.stderr}`);
  }
  return result.stdout;
}

export class Netns {
  private constructor(readonly name: string) {}

  /** Creates a namespace named hearth-t-<tag>-<random> with loopback up. */
  static async create(tag: string): Promise<Netns> {
    const name = `hearth-t-${tag}-${randomBytes(3).toString('hex')}`;
    await mustRun('ip', ['netns', 'add', name]);
    const netns = new Netns(name);
    await netns.must('ip', ['link', 'set', 'lo', 'up']);
    return netns;
  }

  /** Runs a command inside the namespace. */
  exec(command: string, args: string[], input?: string, timeoutMs?: number): Promise<Run> {
    return run('ip', ['netns', 'exec', this.name, command, ...args], input, timeoutMs);
  }

  must(command: string, args: string[], input?: string): Promise<string> {
    return mustRun('ip', ['netns', 'exec', this.name, command, ...args], input);
  }

  /** Deletes the namespace, and with it its links, TAPs, routes and nftables tables. */
  async delete(): Promise<void> {
    await run('ip', ['netns', 'del', this.name]);
  }
}

/** Connects two namespaces with a veth pair, created inside them (never in the root one). */
export async function linkNamespaces(
  a: Netns,
  aName: string,
  b: Netns,
  bName: string,
): Promise<void> {
  await a.must('ip', [
    'link',
    'add',
    aName,
    'type',
    'veth',
    'peer',
    'name',
    bName,
    'netns',
    b.name,
  ]);
  await a.must('ip', ['link', 'set', aName, 'up']);
  await b.must('ip', ['link', 'set', bName, 'up']);
}

/** Network namespaces whose names start with hearth-t-, for leak checks. */
export async function testNamespaces(): Promise<string[]> {
  const output = await new Promise<string>((resolve) =>
    execFile('ip', ['netns', 'list'], (_, stdout) => resolve(stdout ?? '')),
  );
  return output
    .split('\n')
    .map((line) => line.split(' ')[0] ?? '')
    .filter((name) => name.startsWith('hearth-t-'));
}
