/** A fragment option whose value in the final .config differs from the one requested. */
export interface ConfigMismatch {
  option: string;
  /** The value the fragment requested, e.g. "y", "16" or "\"-hearth\"". */
  expected: string;
  /** The value in the final .config; "n" for "is not set", undefined when absent. */
  actual: string | undefined;
}

/**
 * Parses Kconfig text into option → value. `CONFIG_X=value` keeps its value as written,
 * quotes included, and `# CONFIG_X is not set` maps to "n". Other lines are ignored.
 */
export function parseKernelConfig(text: string): Map<string, string> {
  const options = new Map<string, string>();
  for (const rawLine of text.split('\n')) {
    const line = rawLine.trim();
    const notSet = /^# (CONFIG_\w+) is not set$/.exec(line);
    if (notSet?.[1] !== undefined) {
      options.set(notSet[1], 'n');
      continue;
    }
    const assignment = /^(CONFIG_\w+)=(.*)$/.exec(line);
    if (assignment?.[1] !== undefined && assignment[2] !== undefined) {
      options.set(assignment[1], assignment[2]);
    }
  }
  return options;
}

/**
 * Compares every option of a fragment with the final .config. An option requested as "n"
 * matches when it is absent or not set. Any other value must appear exactly as written.
 * Returns the options that did not stick, in fragment order.
 */
export function verifyKernelConfig(fragmentText: string, finalText: string): ConfigMismatch[] {
  const final = parseKernelConfig(finalText);
  const mismatches: ConfigMismatch[] = [];
  for (const [option, expected] of parseKernelConfig(fragmentText)) {
    const actual = final.get(option);
    const matches = expected === 'n' ? actual === undefined || actual === 'n' : actual === expected;
    if (!matches) {
      mismatches.push({ option, expected, actual });
    }
  }
  return mismatches;
}

/** Formats mismatches one per line: "CONFIG_EXT4_FS=y (final .config: absent)". */
export function formatConfigMismatches(mismatches: readonly ConfigMismatch[]): string {
  return mismatches
    .map(({ option, expected, actual }) => {
      return `${option}=${expected} (final .config: ${describeActual(actual)})`;
    })
    .join('\n');
}

function describeActual(actual: string | undefined): string {
  if (actual === undefined) {
    return 'absent';
  }
  return actual === 'n' ? 'is not set' : `=${actual}`;
}
