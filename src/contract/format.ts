export const GIB = 1024 ** 3;

/** Bytes as GiB with `digits` decimals ("7.4"), or null when the figure is unknown. */
export function gibOf(bytes: number | null | undefined, digits = 1): string | null {
  return bytes === null || bytes === undefined ? null : (bytes / GIB).toFixed(digits);
}

/**
 * Dollars for people: `smallDigits` decimals below a dollar ("$0.0042"), cents above ("$12.35").
 * The sign goes before the dollar, and a figure that rounds to nothing has none ("$0.000", not "$-0.000").
 */
export function dollarsOf(amount: number, smallDigits: number): string {
  const digits = Math.abs(amount).toFixed(Math.abs(amount) < 1 ? smallDigits : 2);
  return `${amount < 0 && Number(digits) !== 0 ? '-' : ''}$${digits}`;
}

/** A 24-hour clock time in the reader's locale; h23, as hour12: false is h24 in some (en-US: "24:05:07"). */
export function clockTimeOf(iso: string): string {
  return new Date(iso).toLocaleTimeString([], { hourCycle: 'h23' });
}

/** Whether a value is a JSON object: not null, not an array. */
export function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A text's JSON value, or undefined when it is not JSON (JSON.parse itself never gives undefined). */
export function jsonOf(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** Whether JSON text nests objects and arrays deeper than `limit`, found in one pass without parsing. */
export function nestedDeeperThan(text: string, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i += 1; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      depth += 1;
      if (depth > limit) return true;
    } else if (c === 0x7d || c === 0x5d) depth -= 1;
  }
  return false;
}
