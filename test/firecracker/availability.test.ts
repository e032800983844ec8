import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { firecrackerAvailability } from '../../src/vmm/firecracker/availability.js';

test('availability needs a binary on PATH', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hearth-fc-path-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  let probes = 0;
  const kvmUsable = async () => {
    probes += 1;
    return { usable: true, reason: 'booted a guest' };
  };

  const missing = await firecrackerAvailability({ kvmUsable, searchPath: dir });
  await writeFile(join(dir, 'firecracker'), '#!/bin/sh\n');
  const notExecutable = await firecrackerAvailability({ kvmUsable, searchPath: dir });

  assert.deepEqual(missing, { usable: false, reason: 'no firecracker binary on PATH' });
  assert.deepEqual(notExecutable, { usable: false, reason: 'no firecracker binary on PATH' });
  assert.equal(probes, 0, 'the slow KVM probe runs only when the binary exists');
});

test('availability needs a KVM that boots', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hearth-fc-path-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const binary = join(dir, 'firecracker');
  await writeFile(binary, '#!/bin/sh\n');
  await chmod(binary, 0o755);
  const searchPath = `/nonexistent:${dir}`;

  const noKvm = await firecrackerAvailability({
    searchPath,
    kvmUsable: async () => ({ usable: false, reason: 'the probe guest hit an emulation failure' }),
  });
  const usable = await firecrackerAvailability({
    searchPath,
    kvmUsable: async () => ({ usable: true, reason: 'booted a guest' }),
  });
  const byPath = await firecrackerAvailability({
    firecrackerPath: join(dir, 'missing'),
    kvmUsable: async () => ({ usable: true, reason: 'booted a guest' }),
  });

  assert.equal(noKvm.usable, false);
  assert.equal(
    noKvm.reason,
    'KVM cannot boot a guest here: the probe guest hit an emulation failure',
  );
  assert.deepEqual(usable, { usable: true, reason: `${binary} with KVM` });
  assert.deepEqual(byPath, {
    usable: false,
    reason: `${join(dir, 'missing')} is missing or not executable`,
  });
});
