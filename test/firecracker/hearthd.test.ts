// hearthd with HEARTH_VMM=firecracker refuses to start where Firecracker cannot run.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HearthError } from '../../src/errors.js';
import { findExecutable } from '../../src/vmm/firecracker/index.js';
import { startTestHearthd } from '../helpers/hearthd.js';

describe('hearthd with vmm firecracker', () => {
  it('refuses to start without a firecracker binary', async (t) => {
    if (await findExecutable('firecracker')) {
      t.skip('a firecracker binary is on PATH, so hearthd would start');
      return;
    }
    await assert.rejects(startTestHearthd({ vmm: 'firecracker' }), (error: HearthError) => {
      assert.equal(error.code, 'vmm_unavailable');
      assert.match(error.message, /no firecracker binary on PATH/);
      assert.match(error.message, /HEARTH_VMM=qemu/);
      return true;
    });
  });

  it('rejects an unknown vmm', async () => {
    await assert.rejects(startTestHearthd({ vmm: 'bhyve' }), (error: HearthError) => {
      assert.equal(error.code, 'invalid_config');
      return true;
    });
  });
});
