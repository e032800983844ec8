import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';

import { loadSpec, type SwaggerSpec } from './swagger-validator.js';

// Firecracker's API description is kept outside the repository, next to it, as data.
const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));

export const specPath =
  process.env.HEARTH_FIRECRACKER_SPEC ??
  resolve(repoRoot, '..', 'shared', 'firecracker', 'firecracker.yaml');

const spec: SwaggerSpec | null = existsSync(specPath) ? loadSpec(specPath) : null;

/** Returns the spec, or marks the test skipped and returns null when the file is absent. */
export function requireSpec(t: TestContext): SwaggerSpec | null {
  if (!spec) {
    t.skip(
      `Firecracker's API spec was not found at ${specPath}; ` +
        'set HEARTH_FIRECRACKER_SPEC to its path to run this contract test',
    );
  }
  return spec;
}

/** Returns the spec, or null when the file is absent, without skipping the test. */
export function specIfPresent(): SwaggerSpec | null {
  return spec;
}
