/**
 * Resources of a task: `src` fetched over http(s) with a byte and a time limit (redirects
 * followed only to http(s), a bounded number of times), and the files of one directory packed
 * as a tar for a per-task volume.
 */
import * as E from 'fp-ts/lib/Either.js';
import { pack } from 'tar-stream';
import { aborted, describeCause, invalidEntry, unavailable, type AnyError } from '@lessl/core';
import { egressRefusal, guardedFetch, type EgressGuard } from '@lessl/docker';
import type { Policy } from './plan.js';
import { HttpProblem } from './problem.js';

/**
 * Fetches `url` under the policy's limits, through `egress` (an address it refuses, at any hop, is
 * `InvalidEntry` naming it). Never throws: a bad answer is `InvalidEntry`, no answer `Unavailable`.
 */
export const fetchSrc = async (
  url: string,
  limits: Policy['fetch'],
  egress: EgressGuard,
  signal?: AbortSignal,
): Promise<E.Either<AnyError, Buffer>> => {
  const timeout = AbortSignal.timeout(limits.timeoutMs);
  const sig = signal === undefined ? timeout : AbortSignal.any([signal, timeout]);
  let at = url;
  try {
    for (let hop = 0; ; hop++) {
      const res = await guardedFetch(at, { redirect: 'manual', signal: sig }, egress);
      if (res.status >= 300 && res.status < 400 && res.headers.has('location')) {
        await res.body?.cancel();
        const next = new URL(res.headers.get('location') ?? '', at);
        if (next.protocol !== 'http:' && next.protocol !== 'https:')
          return E.left(invalidEntry(`src ${url}: redirect to ${next.protocol} refused (only http and https)`, '', ['src']));
        if (hop >= limits.maxRedirects)
          return E.left(invalidEntry(`src ${url}: more than ${limits.maxRedirects} redirects`, '', ['src']));
        at = next.href;
        continue;
      }
      if (!res.ok) {
        await res.body?.cancel();
        return E.left(invalidEntry(`src ${url}: the server answered ${res.status}`, '', ['src']));
      }
      const declared = Number(res.headers.get('content-length') ?? Number.NaN);
      if (declared > limits.maxBytes) {
        await res.body?.cancel();
        return E.left(invalidEntry(`src ${url}: ${declared} bytes is past the limit of ${limits.maxBytes}`, '', ['src']));
      }
      const parts: Buffer[] = [];
      let n = 0;
      for await (const c of res.body ?? []) {
        n += c.byteLength;
        if (n > limits.maxBytes) {
          await res.body?.cancel().catch(() => undefined);
          return E.left(invalidEntry(`src ${url}: more than ${limits.maxBytes} bytes`, '', ['src']));
        }
        parts.push(Buffer.from(c));
      }
      return E.right(Buffer.concat(parts));
    }
  } catch (err) {
    if (signal?.aborted === true) return E.left(aborted('', signal.reason));
    const refused = egressRefusal(err);
    if (refused !== undefined) return E.left(invalidEntry(`src ${url} refused: ${refused}`, '', ['src']));
    if (timeout.aborted) return E.left(unavailable('', `src ${url}: no complete answer within ${limits.timeoutMs} ms`));
    const cause = err instanceof Error && err.cause !== undefined ? describeCause(err.cause) : describeCause(err);
    return E.left(unavailable('', `src ${url}: unreachable (${cause})`));
  }
};

/**
 * A 400 naming the refusal when `url` points at an address the guard refuses (resolved now; the
 * fetch checks again, at every redirect).
 */
export const refuseBlocked = async (egress: EgressGuard, url: string | undefined, key: string): Promise<void> => {
  if (url === undefined || !/^https?:\/\//i.test(url)) return;
  const r = await egress.resolve(url);
  if (E.isLeft(r)) throw new HttpProblem(invalidEntry(`${withoutUserinfo(url)} refused: ${r.left}`, '', [key]), 400);
};

/** `url` without a user and password (not to be echoed back in a message). */
const withoutUserinfo = (url: string): string => {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.href;
  } catch {
    return '(the URL)';
  }
};

/** A tar of files (names relative to their directory). */
export const tarOf = async (files: readonly { readonly name: string; readonly data: Buffer }[]): Promise<Uint8Array> => {
  const p = pack();
  for (const f of files) p.entry({ name: f.name, mode: f.data.subarray(0, 2).toString() === '#!' ? 0o755 : 0o644 }, f.data);
  p.finalize();
  const parts: Uint8Array[] = [];
  const chunks: AsyncIterable<unknown> = p;
  for await (const c of chunks) if (c instanceof Uint8Array) parts.push(c);
  return new Uint8Array(Buffer.concat(parts));
};
