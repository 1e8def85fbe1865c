/**
 * Errors on the wire: RFC 9457 `application/problem+json`, carrying the lessl error tag.
 */
import { invalidEntry, type AnyError, type ErrorTag } from '@lessl/core';
import { toJsonSchema } from './codec.js';
import * as t from 'io-ts';

/** The HTTP status of each lessl error tag (docs/service.md). */
export const STATUS: Readonly<Record<ErrorTag, number>> = {
  InvalidEntry: 400,
  ReadOnlyKey: 400,
  InvalidFilterSpec: 400,
  UnsupportedChecksum: 400,
  UnknownParent: 400,
  InvalidParent: 400,
  UnknownLocation: 404,
  InvalidLocation: 403,
  PermissionDenied: 403,
  NotFound: 404,
  NameCollision: 409,
  InUse: 409,
  Conflict: 409,
  ChecksumMismatch: 422,
  Unsupported: 501,
  Unavailable: 503,
  Aborted: 503,
  RuntimeError: 500,
};

/** The problem document (its codec generates the OpenAPI schema). */
export const ProblemC = t.intersection([
  t.type({ type: t.string, title: t.string, status: t.number, detail: t.string, tag: t.string }),
  t.partial({
    instance: t.string,
    keys: t.array(t.string),
    quota: t.string,
    limit: t.number,
    usage: t.number,
  }),
]);
/** A problem document. */
export type Problem = t.TypeOf<typeof ProblemC>;
/** The problem document's JSON schema. */
export const PROBLEM_SCHEMA = toJsonSchema(ProblemC);

/** Fields a problem adds to the document (a quota refused: which, its limit, the usage). */
export type ProblemExtra = Pick<Problem, 'quota' | 'limit' | 'usage'>;

/** An HTTP-level failure: a lessl error with the status to answer (401, 413, 429, ... where HTTP says more). */
export class HttpProblem extends Error {
  constructor(
    readonly error: AnyError,
    readonly status: number = STATUS[error._tag],
    readonly headers: Readonly<Record<string, string>> = {},
    readonly extra: ProblemExtra = {},
  ) {
    super(error.message);
  }
}

/** The problem document of a lessl error. */
export const problemOf = (e: AnyError, status: number = STATUS[e._tag], instance?: string): Problem => ({
  type: `urn:lessl:error:${e._tag}`,
  title: e._tag,
  status,
  detail: e.message,
  tag: e._tag,
  ...(instance === undefined ? {} : { instance }),
  ...(e._tag === 'InvalidEntry' && e.keys.length > 0 ? { keys: [...e.keys] } : {}),
});

/** A 400 for a request that is not what the route takes. */
export const badRequest = (message: string, keys: readonly string[] = []): HttpProblem =>
  new HttpProblem(invalidEntry(message, '', keys), 400);
