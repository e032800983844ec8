// Runs shell commands inside a guest at the same time and collects each one's exit code and
// output, for the egress tests.
import assert from 'node:assert/strict';
import type { Target } from '../../src/cli/client.js';
import { execute } from './hearthd.js';

export interface ProbeResult {
  /** The command's exit code; for curl, 7 means refused or unreachable, 28 a timeout. */
  rc: number;
  output: string;
}

// Denied connections are rejected at once; 8 s is for drops and a slow TCG guest.
export const CURL = 'curl -sS -m 8';

/** Runs shell commands in the guest at the same time and returns each one's result. */
export async function probeGuest(
  target: Target,
  session: string,
  commands: Record<string, string>,
): Promise<Record<string, ProbeResult>> {
  const names = Object.keys(commands);
  const script = [
    'rm -rf /tmp/probe && mkdir /tmp/probe && cd /tmp/probe',
    ...names.map((name) => `{ ( ${commands[name]} ) >${name}.out 2>&1; echo $? >${name}.rc; } &`),
    'wait',
    `python3 -c 'import json; names = ${JSON.stringify(names)}; print(json.dumps({` +
      'n: {"rc": int(open(n + ".rc").read()), "output": open(n + ".out").read()} ' +
      "for n in names}))'",
  ].join('\n');
  const result = await execute(target, session, {
    language: 'bash',
    code: script,
    timeout_seconds: 120,
  });
  assert.equal(result.exit_code, 0, `probe script failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as Record<string, ProbeResult>;
}
