import { gibOf } from '../../src/contract/index.js';

export function gib(bytes: number | null | undefined, digits = 1): string {
  const value = gibOf(bytes, digits);
  return value === null ? '–' : `${value} GiB`;
}

export function percent(ratio: number | null | undefined): string {
  return ratio === null || ratio === undefined ? '–' : `${Math.round(ratio * 100)} %`;
}

/** `part` as a percentage of `whole`; null when either is unknown (nvidia-smi could not read it) or the whole is 0. */
export function percentOf(part: number | null, whole: number | null): number | null {
  return part === null || whole === null || whole <= 0 ? null : (part / whole) * 100;
}

export function ms(value: number | null | undefined): string {
  if (value === null || value === undefined) return '–';
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${Math.round(value)} ms`;
}
