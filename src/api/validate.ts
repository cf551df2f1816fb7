import type { ApiRequest } from './call.js';
import type { z } from 'zod';
import { BridgeError } from '../contract/index.js';

type Issue = z.core.$ZodIssue;

/**
 * What is wrong with a value a union took none of its forms for, which zod reports only as
 * "Invalid input": the problem of the form that got furthest into the value (a list whose items
 * are wrong says which item), or, where every form fails at the value itself, the types they take.
 */
function closestIssue(issue: Issue): Issue {
  // A union with a message of its own (`error` in the schema) has said it already.
  if (issue.code !== 'invalid_union' || issue.message !== 'Invalid input') return issue;
  const inner = issue.errors.flatMap((branch) => branch.slice(0, 1)).map((found) => closestIssue({ ...found, path: [...issue.path, ...found.path] }));
  if (inner.length === 0) return issue;
  const furthest = inner.reduce((best, found) => (found.path.length > best.path.length ? found : best));
  if (furthest.path.length > issue.path.length || !inner.every((found) => found.code === 'invalid_type')) return furthest;
  const received = /received (\w+)$/.exec(furthest.message)?.[1];
  const expected = [...new Set(inner.map((found) => (found.code === 'invalid_type' ? found.expected : '')))].join(' or ');
  return { ...issue, message: `Invalid input: expected ${expected}${received === undefined ? '' : `, received ${received}`}` };
}

/** The first problem of a failed parse, as "path: message" for an error body. */
function describeIssue(error: z.ZodError): { message: string; param: string | null } {
  const first = error.issues[0];
  if (first === undefined) return { message: 'invalid request', param: null };
  const issue = closestIssue(first);
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
