import { readFileSync } from 'node:fs';

const ERROR_TABLE_HEADER = '| status | when | `code` (OpenAI shape) |';

/**
 * The README's table of the errors the bridge itself produces, as "status code" pairs: one per
 * code its `code` column names for that status.
 */
export function documentedErrors(): Set<string> {
  const lines = readFileSync('README.md', 'utf8').split('\n');
  const header = lines.indexOf(ERROR_TABLE_HEADER);
  if (header === -1) throw new Error(`README.md has no table headed ${ERROR_TABLE_HEADER}`);
  const pairs = new Set<string>();
  // Past the header and its --- line, up to the first line that is no table row.
  for (const row of lines.slice(header + 2)) {
    if (!row.startsWith('|')) break;
    const cells = row.split('|').map((cell) => cell.trim());
    const [status, codes] = [cells[1], cells.at(-2)];
    for (const [, code] of (codes ?? '').matchAll(/`([^`]+)`/g)) pairs.add(`${status} ${code}`);
  }
  return pairs;
}

const CONFIG_TABLE_HEADER = '| key | default | env var | meaning |';

/** The environment variables the README's configuration table names in its "env var" column. */
export function documentedEnvironmentVariables(): Set<string> {
  const lines = readFileSync('README.md', 'utf8').split('\n');
  const header = lines.indexOf(CONFIG_TABLE_HEADER);
  if (header === -1) throw new Error(`README.md has no table headed ${CONFIG_TABLE_HEADER}`);
  const names = new Set<string>();
  for (const row of lines.slice(header + 2)) {
    if (!row.startsWith('|')) break;
    const column = row.split('|').map((cell) => cell.trim())[3] ?? '';
    for (const [, name] of column.matchAll(/`([A-Z][A-Z0-9_]*)`/g)) names.add(name as string);
  }
  return names;
}
