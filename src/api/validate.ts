import type { ServerResponse } from 'node:http';
import type { ApiRequest } from './call.js';
import type { z } from 'zod';
import { sendError, type Surface } from './errors.js';

/** The first problem of a failed parse, as "path: message" for an error body. */
export function describeIssue(error: z.ZodError): { message: string; param: string | null } {
  const issue = error.issues[0];
  if (issue === undefined) return { message: 'invalid request', param: null };
  const param = issue.path.length === 0 ? null : issue.path.map(String).join('.');
  return { message: param === null ? issue.message : `${param}: ${issue.message}`, param };
}

/** The parsed request body, or undefined after answering 400 in the surface's own error shape. */
export function parseBody<T extends z.ZodType>(schema: T, req: ApiRequest, res: ServerResponse, surface: Surface): z.output<T> | undefined {
  const parsed = schema.safeParse(req.body ?? {});
  if (parsed.success) return parsed.data;
  const issue = describeIssue(parsed.error);
  sendError(res, surface, 400, issue.message, 'invalid_request', issue.param);
  return undefined;
}
