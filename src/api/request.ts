import type { IncomingMessage } from 'node:http';
import type { RequestIdentity, RequestRecord } from '../contract/index.js';
import { clientSignals } from '../routing/signals.js';
import { surfaceOf } from './errors.js';

/**
 * An absolute-form request target (`http://host/path?query`, RFC 9112 §3.2.2, as some HTTP proxies
 * send it): its authority and the origin-form target it stands for (`/path?query`). Undefined for
 * an origin-form target.
 */
export function absoluteForm(target: string): { authority: string; originForm: string } | undefined {
  if (target.charCodeAt(0) === 0x2f) return undefined;
  const match = /^https?:\/\/([^/?#]*)/i.exec(target);
  if (match === null) return undefined;
  const rest = target.slice(match[0].length);
  return { authority: match[1] as string, originForm: rest.startsWith('/') ? rest : `/${rest}` };
}

const records = new WeakMap<IncomingMessage, RequestRecord>();

/** Creates the record of a request that just arrived; its surface is decided here, once. */
export function beginRequest(req: IncomingMessage, id: string, path: string): RequestRecord {
  const client = clientSignals(req.headers);
  const record: RequestRecord = {
    id,
    startedAt: new Date(),
    method: req.method ?? 'GET',
    path,
    surface: surfaceOf(path, req.headers),
    client: { name: client.name, userAgent: client.userAgent, interaction: client.interaction, intent: client.intent, requestId: client.requestId },
    identity: null,
    backend: null,
    generation: null,
    relay: null,
    upstreamError: null,
    end: null,
  };
  records.set(req, record);
  return record;
}

/** The record of a request being served; every request gets one when it arrives. */
export function requestOf(req: IncomingMessage): RequestRecord {
  const record = records.get(req);
  if (record === undefined) throw new Error('a request reached a handler without its record (beginRequest runs first)');
  return record;
}

/** Who sent the request; set by the auth layer before any handler that needs it runs. */
export function identityOf(req: IncomingMessage): RequestIdentity {
  const identity = requestOf(req).identity;
  if (identity === null) throw new Error('a request reached a handler without its identity (the auth layer runs first)');
  return identity;
}
