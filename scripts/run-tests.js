// Runs the whole test suite: unit tests, then the tests that boot real VMs, one file at a
// time because each VM under TCG keeps a host core busy while it boots.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const suites = [
  'dist/test/unit/',
  'dist/test/firecracker/',
  'dist/test/vm/',
  'dist/test/sdk/',
  'dist/test/network/',
].filter((dir) => existsSync(dir));
const result = spawnSync(
  process.execPath,
  ['--test', '--test-concurrency=1', '--test-reporter=spec', ...suites],
  { stdio: 'inherit' },
);
process.exit(result.status ?? 1);
