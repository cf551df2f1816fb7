import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';

/**
 * Creates a folder and the missing ones above it. Node's recursive mkdir retries for ever under a
 * folder that exists yet takes no new ones (/proc answers ENOENT): here each missing folder is made
 * on its own, and the first that cannot be ends the start with its name and why.
 */
export function makeFolder(folder: string): void {
  const missing: string[] = [];
  for (let current = path.resolve(folder); !existsSync(current); current = path.dirname(current)) {
    missing.unshift(current);
    if (path.dirname(current) === current) break;
  }
  for (const name of missing) {
    try {
      mkdirSync(name);
    } catch (error) {
      const { code, message } = error as NodeJS.ErrnoException;
      // Made meanwhile (another start at the same time) is as good as made here.
      if (code === 'EEXIST') continue;
      throw new Error(`could not create the folder ${name} (${message})`, { cause: error });
    }
  }
}
