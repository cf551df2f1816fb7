import type { z } from 'zod';

/** The first problem of a failed parse, as "path: message" for an error body. */
export function describeIssue(error: z.ZodError): { message: string; param: string | null } {
  const issue = error.issues[0];
  if (issue === undefined) return { message: 'invalid request', param: null };
  const param = issue.path.length === 0 ? null : issue.path.map(String).join('.');
  return { message: param === null ? issue.message : `${param}: ${issue.message}`, param };
}
