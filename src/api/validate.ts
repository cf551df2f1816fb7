import type { ApiRequest } from './call.js';
import type { z } from 'zod';
import { BridgeError } from '../contract/index.js';

/** The first problem of a failed parse, as "path: message" for an error body. */
function describeIssue(error: z.ZodError): { message: string; param: string | null } {
  const issue = error.issues[0];
  if (issue === undefined) return { message: 'invalid request', param: null };
  const param = issue.path.length === 0 ? null : issue.path.map(String).join('.');
  return { message: param === null ? issue.message : `${param}: ${issue.message}`, param };
}

/** The parsed request body; a body that does not fit the schema is a 400 naming the field. */
export function parseBody<T extends z.ZodType>(schema: T, req: ApiRequest): z.output<T> {
  const parsed = schema.safeParse(req.body ?? {});
  if (parsed.success) return parsed.data;
  const issue = describeIssue(parsed.error);
  throw new BridgeError(400, issue.message, { code: 'invalid_request', param: issue.param });
}
