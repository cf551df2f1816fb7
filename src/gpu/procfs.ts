import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';

/**
 * Linux process facts from /proc, to find which GPU an Ollama instance runs on when the bridge did
 * not start it: the process listening on its port, and that process's runners (its children).
 * Elsewhere these answer "unknown" (undefined / empty).
 */

function socketInode(port: number): string | undefined {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cells = line.trim().split(/\s+/);
      // local_address is "ADDR:PORT"; state 0A is LISTEN; the inode is the tenth cell.
      if (cells[1]?.endsWith(`:${hexPort}`) && cells[3] === '0A') return cells[9];
    }
  }
  return undefined;
}

function pids(): number[] {
  try {
    return readdirSync('/proc')
      .filter((name) => /^\d+$/.test(name))
      .map(Number);
  } catch {
    return [];
  }
}

/** The process that listens on a local TCP port, if this user can see it. */
export function listeningPid(port: number): number | undefined {
  const inode = socketInode(port);
  if (inode === undefined) return undefined;
  const target = `socket:[${inode}]`;
  for (const pid of pids()) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`) === target) return pid;
      } catch {
        // closed meanwhile
      }
    }
  }
  return undefined;
}

/** A process and everything it started, transitively. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const pid of pids()) {
    try {
      // The command name may hold spaces or parentheses: the parent pid follows the last ")".
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), pid]);
    } catch {
      // gone
    }
  }
  const tree = [root];
  for (let i = 0; i < tree.length; i++) tree.push(...(children.get(tree[i] as number) ?? []));
  return tree;
}

/**
 * Remembers which process listens on a port: finding it scans every process's open files, too
 * much to repeat on every GPU sample. An answer is kept until its process is gone or `maxAgeMs` passed.
 */
export class ListenerCache {
  private readonly known = new Map<number, { pid: number | undefined; at: number }>();

  constructor(private readonly maxAgeMs = 30_000) {}

  pidOf(port: number): number | undefined {
    const hit = this.known.get(port);
    const fresh = hit !== undefined && Date.now() - hit.at < this.maxAgeMs && (hit.pid === undefined || existsSync(`/proc/${hit.pid}`));
    if (fresh) return hit.pid;
    const pid = listeningPid(port);
    this.known.set(port, { pid, at: Date.now() });
    return pid;
  }
}
