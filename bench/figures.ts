/** One benchmark figure. A figure with a target records whether this run met it. */
export interface Figure {
  value: number;
  unit: string;
  /** The time as a ratio to the bare boot's median in the same run. */
  ratio_to_bare_boot?: number;
  /** The highest value, or ratio for times, that meets the goal. */
  target?: number;
  met?: boolean;
  samples?: number;
}

export function percentile(samples: number[], fraction: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1);
  return sorted[Math.max(0, index)]!;
}

/** Builds a time figure. Its target, if any, applies to its ratio to the bare boot. */
export function figure(
  samples: number[],
  fraction: number,
  bareMs: number,
  target?: number,
): Figure {
  const value = Math.round(percentile(samples, fraction) * 100) / 100;
  const ratio = Math.round((value / bareMs) * 1000) / 1000;
  const result: Figure = { value, unit: 'ms', ratio_to_bare_boot: ratio, samples: samples.length };
  if (target !== undefined) {
    result.target = target;
    result.met = ratio <= target;
  }
  return result;
}

export function ratioFigure(value: number, target: number): Figure {
  const rounded = Math.round(value * 1000) / 1000;
  return { value: rounded, unit: 'ratio', target, met: rounded <= target };
}
