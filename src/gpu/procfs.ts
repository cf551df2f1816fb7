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

/** The process holding a socket, if this user can see it: a scan of every process's open files. */
function pidHolding(inode: string): number | undefined {
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

/** The fields of /proc/<pid>/stat after the command name (state first); undefined once it is gone, or off Linux. */
function statFields(pid: number): string[] | undefined {
  try {
    // The command name may hold spaces or parentheses: the other fields follow the last ")".
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** A process's parent; undefined once it is gone. */
function parentOf(pid: number): number | undefined {
  const fields = statFields(pid);
  return fields === undefined ? undefined : Number(fields[1]);
}

/**
 * When a process started (clock ticks since boot), while it runs and is not a zombie: with its pid,
 * it names one process for good, where a pid alone may be given to another once it has ended.
 */
export function startTimeOf(pid: number): string | undefined {
  const fields = statFields(pid);
  return fields === undefined || fields[0] === 'Z' ? undefined : fields[19];
}

/** Deeper than any process tree a server starts: a bound on the walk, whatever /proc says. */
const MAX_TREE_DEPTH = 64;

/**
 * Whether `pid` is `root` or was started by it, transitively. Walks up from `pid` through its
 * parents, so only the few processes asked about are read on each GPU sample, never all of /proc
 * (a scan of every process blocked the event loop for longer the more processes the host ran).
 */
export function descendsFrom(pid: number, root: number): boolean {
  let current: number | undefined = pid;
  for (let depth = 0; current !== undefined && depth < MAX_TREE_DEPTH; depth++) {
    if (current === root) return true;
    if (current <= 1) return false;
    current = parentOf(current);
  }
  return false;
}

/**
 * Remembers which process listens on a port. Finding it scans every process's open files, too much
 * to repeat on every GPU sample: an answer is kept while its process lives, and checked every
 * `recheckMs` against the socket listening on the port; only another socket is looked for again.
 */
export class ListenerCache {
  private readonly known = new Map<number, { inode: string | undefined; pid: number | undefined; at: number }>();

  constructor(private readonly recheckMs = 30_000) {}

  pidOf(port: number): number | undefined {
    const hit = this.known.get(port);
    const alive = hit !== undefined && (hit.pid === undefined || existsSync(`/proc/${hit.pid}`));
    if (alive && Date.now() - hit.at < this.recheckMs) return hit.pid;
    const inode = socketInode(port);
    const pid = inode === undefined ? undefined : alive && hit.inode === inode ? hit.pid : pidHolding(inode);
    this.known.set(port, { inode, pid, at: Date.now() });
    return pid;
  }
}
