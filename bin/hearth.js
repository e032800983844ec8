#!/usr/bin/env node
// Entry point for `npx hearth`: runs the compiled CLI, or says how to build it.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const cliPath = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
if (!existsSync(cliPath)) {
  console.error('hearth: the CLI is not built yet. Run ./setup.sh (or npm run build) first.');
  process.exit(1);
}
await import(cliPath);
