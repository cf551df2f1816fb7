export const GIB = 1024 ** 3;

/** Bytes as GiB with `digits` decimals ("7.4"), or null when the figure is unknown. */
export function gibOf(bytes: number | null | undefined, digits = 1): string | null {
  return bytes === null || bytes === undefined ? null : (bytes / GIB).toFixed(digits);
}
