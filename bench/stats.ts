/** Summary statistics of benchmark samples: these machines are shared and noisy, so medians with min and max. */

/** The median, min and max of a set of samples, and how many there were. */
export interface Summary {
  median: number;
  min: number;
  max: number;
  n: number;
}

/** Summarizes samples; undefined for none (a figure not measured). NaN samples are refused. */
export function summarize(samples: readonly number[]): Summary | undefined {
  if (samples.length === 0) return undefined;
  if (samples.some((s) => Number.isNaN(s))) throw new Error("a sample is NaN");
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { median, min: sorted[0], max: sorted[sorted.length - 1], n: sorted.length };
}

/** value / reference, or undefined when either is missing or the reference is 0. */
export function ratio(value: number | undefined, reference: number | undefined): number | undefined {
  if (value === undefined || reference === undefined || reference === 0) return undefined;
  return value / reference;
}
