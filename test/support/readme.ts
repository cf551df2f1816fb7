import { readFileSync } from 'node:fs';

/** The cells of each row of the README table under `header`, past its --- line, up to the first line that is no table row. */
function tableRows(header: string): string[][] {
  const lines = readFileSync('README.md', 'utf8').split('\n');
  const at = lines.indexOf(header);
  if (at === -1) throw new Error(`README.md has no table headed ${header}`);
  const rows: string[][] = [];
  for (const row of lines.slice(at + 2)) {
    if (!row.startsWith('|')) break;
    rows.push(row.split('|').map((cell) => cell.trim()));
  }
  return rows;
}

/**
 * The README's table of the errors the bridge itself produces, as "status code" pairs: one per
 * code its `code` column names for that status.
 */
export function documentedErrors(): Set<string> {
  const pairs = new Set<string>();
  for (const cells of tableRows('| status | when | `code` (OpenAI shape) |')) {
    const [status, codes] = [cells[1], cells.at(-2)];
    for (const [, code] of (codes ?? '').matchAll(/`([^`]+)`/g)) pairs.add(`${status} ${code}`);
  }
  return pairs;
}

/** The environment variables the README's configuration table names in its "env var" column. */
export function documentedEnvironmentVariables(): Set<string> {
  const names = new Set<string>();
  for (const cells of tableRows('| key | default | env var | meaning |')) {
    for (const [, name] of (cells[3] ?? '').matchAll(/`([A-Z][A-Z0-9_]*)`/g)) names.add(name as string);
  }
  return names;
}
