/**
 * The functions REST API (`/v1/functions`) over `LesslClient`: deploy, list, read, remove,
 * invoke (raw bytes in, raw bytes out, the outcome in headers), logs; and `GET /v1/whoami`.
 * Answers are decoded with the service's own codecs (`@lessl/service/stack`).
 */
import {
  FunctionListC,
  FunctionViewC,
  InvocationLogC,
  WhoamiC,
  type FunctionBody,
  type FunctionView,
} from '@lessl/service/stack';
import { clientProblem, LesslError, type LesslClient } from './client.js';
import { field } from './unknown.js';

export type { FunctionBody, FunctionView } from '@lessl/service/stack';

/** One invocation of a function's log (`GET /v1/functions/{name}/logs`). */
export type InvocationView = (typeof InvocationLogC)['_A']['invocations'][number];

/** A decoder as the service's io-ts codecs are. */
interface Decoder<A> {
  decode(u: unknown): { readonly _tag: 'Left' } | { readonly _tag: 'Right'; readonly right: A };
}

/** A response's JSON body decoded with `d`; an answer of another shape is a `RuntimeError` naming the route. */
const decoded = async <A>(d: Decoder<A>, r: Response, what: string): Promise<A> => {
  const body: unknown = await r.json().catch(() => undefined);
  const v = d.decode(body);
  if (v._tag === 'Right') return v.right;
  throw new LesslError(clientProblem('RuntimeError', `the service answered ${what} with a body of an unexpected shape`));
};

const path = (name: string): string => `/v1/functions/${encodeURIComponent(name)}`;

/** The caller as the service knows it. */
export const whoami = async (c: LesslClient): Promise<{ name: string; admin: boolean }> =>
  decoded(WhoamiC, await c.request('GET', '/v1/whoami'), 'GET /v1/whoami');

/** `PUT /v1/functions/{name}`: creates or updates the caller's function; `created` when it is new. */
export const putFunction = async (
  c: LesslClient,
  name: string,
  body: FunctionBody,
): Promise<{ view: FunctionView; created: boolean }> => {
  const r = await c.request('PUT', path(name), { json: body });
  return { view: await decoded(FunctionViewC, r, `PUT ${path(name)}`), created: r.status === 201 };
};

/** `GET /v1/functions`: the caller's functions and the public ones (an admin's: all). */
export const listFunctions = async (c: LesslClient): Promise<readonly FunctionView[]> =>
  (await decoded(FunctionListC, await c.request('GET', '/v1/functions'), 'GET /v1/functions')).functions;

/** `DELETE /v1/functions/{name}`. */
export const removeFunction = async (c: LesslClient, name: string): Promise<void> => {
  await c.request('DELETE', path(name));
};

/** `GET /v1/functions/{name}/logs`: the newest invocations first. */
export const functionLogs = async (c: LesslClient, name: string): Promise<readonly InvocationView[]> =>
  (await decoded(InvocationLogC, await c.request('GET', `${path(name)}/logs`), `GET ${path(name)}/logs`)).invocations;

/** One invocation's answer: the process's stdout, and its outcome from the response headers. */
export interface Invoked {
  readonly stdout: Uint8Array;
  /** Null when the process did not exit by itself. */
  readonly exitCode: number | null;
  /** `exited`, `deadline`, `killed`, `lost`, `not-found`. */
  readonly reason: string;
  readonly durationMs: number | null;
  readonly stderrBytes: number | null;
  readonly cold: boolean;
  readonly id: string;
  readonly version: number | null;
  readonly truncated: boolean;
}

/** A header as a number (null when absent, empty or not a number). */
const numberHeader = (h: Headers, name: string): number | null => {
  const v = h.get(name);
  const n = v === null || v.trim() === '' ? NaN : Number(v);
  return Number.isFinite(n) ? n : null;
};

/** `POST /v1/functions/{name}/invoke`: `input` is the process's stdin. */
export const invoke = async (c: LesslClient, name: string, input: Uint8Array): Promise<Invoked> => {
  const r = await c.request('POST', `${path(name)}/invoke`, { body: input, headers: { accept: '*/*' } });
  const h = r.headers;
  return {
    stdout: new Uint8Array(await r.arrayBuffer()),
    exitCode: numberHeader(h, 'x-lessl-exit-code'),
    reason: h.get('x-lessl-reason') ?? 'exited',
    durationMs: numberHeader(h, 'x-lessl-duration-ms'),
    stderrBytes: numberHeader(h, 'x-lessl-stderr-bytes'),
    cold: h.get('x-lessl-cold') === 'true',
    id: h.get('x-lessl-invocation') ?? '',
    version: numberHeader(h, 'x-lessl-version'),
    truncated: h.get('x-lessl-truncated') === 'true',
  };
};

/** `POST /v1/functions/{name}/invoke?async=true`: answers the job (its `id` and the whole document). */
export const invokeAsync = async (c: LesslClient, name: string, input: Uint8Array): Promise<{ id: string; job: unknown }> => {
  const r = await c.request('POST', `${path(name)}/invoke`, { body: input, query: { async: 'true' } });
  const job: unknown = await r.json().catch(() => undefined);
  const id = field(job, 'id');
  if (typeof id !== 'string')
    throw new LesslError(clientProblem('RuntimeError', `the service answered ${path(name)}/invoke?async without a job`));
  return { id, job };
};
