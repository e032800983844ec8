// `npm run test:firecracker`: the Firecracker contract tests, which run everywhere, then the
// end-to-end VM suite with HEARTH_VMM=firecracker where a firecracker binary and a working
// KVM exist. Where they do not, it says why the real-VM part is skipped.
import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

const run = (files, env = process.env) =>
  spawnSync(
    process.execPath,
    ['--test', '--test-concurrency=1', '--test-reporter=spec', ...files],
    {
      stdio: 'inherit',
      env,
    },
  ).status ?? 1;

let status = run(['dist/test/firecracker/']);

const onPath = (process.env.PATH ?? '').split(delimiter).some((dir) => {
  try {
    accessSync(join(dir, 'firecracker'), constants.X_OK);
    return true;
  } catch {
    return false;
  }
});
let kvm = true;
try {
  accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
} catch {
  kvm = false;
}
if (!onPath) {
  console.log('skipped: the end-to-end suite under Firecracker: no firecracker binary on PATH');
} else if (!kvm) {
  console.log('skipped: the end-to-end suite under Firecracker: /dev/kvm is not usable');
} else {
  // hearthd itself probes whether KVM can boot the guest and refuses to start otherwise.
  status ||= run(
    ['dist/test/vm/cli.test.js', 'dist/test/vm/api.test.js', 'dist/test/vm/execution.test.js'],
    {
      ...process.env,
      HEARTH_VMM: 'firecracker',
    },
  );
}
process.exit(status);
