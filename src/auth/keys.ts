import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import YAML, { isMap, isSeq, YAMLMap, YAMLSeq } from 'yaml';
import { MAX_CONFIG_MIB, readTextUpTo } from '../config/load.js';
import type { Role } from '../config/schema.js';

/** A new API key: a prefix that says what it is (secret scanners look for such prefixes) and 256 random bits. */
export function generateKey(): string {
  return `cbk_${randomBytes(32).toString('base64url')}`;
}

/** What the config stores instead of a key. */
export function hashKey(key: string): string {
  return `sha256:${createHash('sha256').update(key, 'utf8').digest('hex')}`;
}

export interface NewKey {
  name: string;
  team?: string;
  role: Role;
  models?: string[];
  cloud?: 'allow' | 'never';
}

export interface ListedKey {
  name: string;
  team: string | null;
  role: string;
  cloud: string;
  models: string[] | null;
  created: string | null;
  /** The start of the stored hash, enough to tell two keys apart; never the key. */
  hash: string;
}

export class KeyFileError extends Error {
  override name = 'KeyFileError';
}

/** A file-system failure on the config file, told as the file and the error code instead of a stack trace. */
function fileError(action: 'read' | 'write', file: string, error: unknown): KeyFileError {
  return new KeyFileError(`cannot ${action} ${file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
}

/** The config file as a YAML document, so comments and layout survive an edit. */
function readDocument(file: string): YAML.Document {
  let text: string | undefined = '';
  try {
    if (existsSync(file)) text = readTextUpTo(file, MAX_CONFIG_MIB);
  } catch (error) {
    throw fileError('read', file, error);
  }
  if (text === undefined) throw new KeyFileError(`${file} is not a config file: it holds more than ${MAX_CONFIG_MIB} MiB`);
  const document = YAML.parseDocument(text);
  if (document.errors.length > 0) throw new KeyFileError(`${file} is not valid YAML: ${document.errors[0]?.message ?? ''}`);
  if (document.contents === null) document.contents = document.createNode({}) as unknown as typeof document.contents;
  if (!isMap(document.contents)) throw new KeyFileError(`${file} does not hold a YAML mapping`);
  return document;
}

function keysOf(document: YAML.Document): YAMLSeq {
  const auth = document.get('auth');
  if (auth === undefined || auth === null) document.set('auth', new YAMLMap());
  else if (!isMap(auth)) throw new KeyFileError('auth is not a mapping');
  const keys = document.getIn(['auth', 'keys']);
  if (keys === undefined || keys === null) {
    document.setIn(['auth', 'keys'], new YAMLSeq());
    return document.getIn(['auth', 'keys']) as YAMLSeq;
  }
  if (!isSeq(keys)) throw new KeyFileError('auth.keys is not a list');
  return keys;
}

/**
 * A key entry as serve reads it: aliases resolved (an entry may take its team or role from an
 * anchor), with the same limit on their expansion.
 */
function entryOf(document: YAML.Document, item: YAMLMap): Record<string, unknown> {
  try {
    return item.toJS(document) as Record<string, unknown>;
  } catch (error) {
    throw new KeyFileError(`auth.keys cannot be read: ${(error as Error).message}`);
  }
}

function write(file: string, document: YAML.Document): void {
  // Written beside the file and renamed over it, so a write that fails part way (disk full) leaves
  // the config as it was. A link is followed: the file it leads to is the one replaced.
  const target = existsSync(file) ? realpathSync(file) : file;
  const temporary = `${target}.${process.pid}.tmp`;
  try {
    // The file names who may use the bridge: keep it private to its owner.
    writeFileSync(temporary, document.toString(), { mode: 0o600 });
    chmodSync(temporary, 0o600);
    // An edit made as root keeps the file readable by the service user that owns it.
    if (existsSync(target)) {
      const { uid, gid } = statSync(target);
      const own = statSync(temporary);
      if (own.uid !== uid || own.gid !== gid) chownSync(temporary, uid, gid);
    }
    renameSync(temporary, target);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw fileError('write', file, error);
  }
}

/** Adds a key to the config file; returns the key, which exists nowhere else from then on. */
export function addKey(file: string, entry: NewKey, now = new Date()): string {
  const document = readDocument(file);
  const keys = keysOf(document);
  if (keys.items.some((item) => isMap(item) && entryOf(document, item).name === entry.name))
    throw new KeyFileError(`a key named '${entry.name}' already exists; revoke it first`);
  const key = generateKey();
  const record: Record<string, unknown> = { name: entry.name };
  if (entry.team !== undefined) record.team = entry.team;
  record.role = entry.role;
  if (entry.models !== undefined && entry.models.length > 0) record.models = entry.models;
  if (entry.cloud !== undefined) record.cloud = entry.cloud;
  record.hash = hashKey(key);
  record.created = now.toISOString();
  keys.add(document.createNode(record));
  write(file, document);
  return key;
}

export function listKeys(file: string): ListedKey[] {
  if (!existsSync(file)) return [];
  const document = readDocument(file);
  return keysOf(document)
    .items.filter(isMap)
    .map((item) => {
      const value = entryOf(document, item);
      const text = (v: unknown): string | null => (typeof v === 'string' ? v : null);
      return {
        name: String(value.name),
        team: text(value.team),
        role: text(value.role) ?? 'user',
        cloud: text(value.cloud) ?? 'allow',
        models: Array.isArray(value.models) ? value.models.map(String) : null,
        created: text(value.created),
        hash: `${String(value.hash ?? '').slice(0, 'sha256:'.length + 12)}…`,
      };
    });
}

/** Removes every key of the name (a hand edit may have given it twice); false when there was none. */
export function revokeKey(file: string, name: string): boolean {
  const document = readDocument(file);
  const keys = keysOf(document);
  const kept = keys.items.filter((item) => !(isMap(item) && entryOf(document, item).name === name));
  if (kept.length === keys.items.length) return false;
  keys.items = kept;
  write(file, document);
  return true;
}
