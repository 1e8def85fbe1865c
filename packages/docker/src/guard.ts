/**
 * The call guard: every call a host's clients make (client/) is bounded and observed. A call
 * that has not answered within the bound (a stream: has not started) is aborted and fails with
 * ETIMEDOUT naming the engine and the call, which maps to `Unavailable`; open calls (uploads,
 * waiting for an exit, the event stream) are not bounded here (their callers bound them).
 * Connection failures are tagged with the engine's name and address, and the observer hears
 * whether each call reached the engine (per-host error tracking, hosts.ts).
 */
import type Docker from 'dockerode';
import type { Call, CallRunner } from './client/index.js';
import { isConnectionError } from './errors.js';

/** Default bound of a call to the engine. */
export const DEFAULT_CALL_TIMEOUT_MS = 30_000;

/** Told of every guarded call's outcome: `reached` is false when the engine could not be reached or timed out. */
export type CallObserver = (reached: boolean, err?: unknown) => void;

/** Reads a string or number field of an untyped object. */
const field = (o: unknown, k: string): string | number | undefined => {
  if (typeof o !== 'object' || o === null || !(k in o)) return undefined;
  const v: unknown = Reflect.get(o, k);
  return typeof v === 'string' || typeof v === 'number' ? v : undefined;
};

/** Where the client talks to, for messages. */
export const endpointOf = (docker: Docker): string => {
  const m: unknown = docker.modem;
  const socketPath = field(m, 'socketPath');
  if (typeof socketPath === 'string') return `unix://${socketPath}`;
  const port = field(m, 'port');
  return `${field(m, 'protocol') ?? 'http'}://${field(m, 'host') ?? 'localhost'}${port === undefined ? '' : `:${port}`}`;
};

/** A stream that has not ended yet (it keeps answering its caller's abort until it closes). */
const openStream = (x: unknown): x is { once(ev: 'close', f: () => void): unknown; destroy(): void } =>
  typeof x === 'object' &&
  x !== null &&
  'once' in x &&
  typeof x.once === 'function' &&
  'destroy' in x &&
  typeof x.destroy === 'function' &&
  !('destroyed' in x && x.destroyed === true);

/**
 * A signal of the guard's own for one call, aborted when the caller's is; `release` stops
 * relaying (when the call settles, or a stream it answered closes).
 */
const linked = (outer: AbortSignal | undefined): { ac: AbortController; release: () => void } => {
  const ac = new AbortController();
  if (outer?.aborted === true) ac.abort(outer.reason);
  const relay = (): void => ac.abort(outer?.reason);
  outer?.addEventListener('abort', relay, { once: true });
  return { ac, release: () => outer?.removeEventListener('abort', relay) };
};

/** Releases when `r` (a stream that started) closes, else at once. */
const releaseWith = (r: unknown, release: () => void): void => {
  if (openStream(r)) r.once('close', release);
  else release();
};

/** The call guard of one host (see the module comment). */
export class CallGuard {
  /** Hears every call's outcome (set by the host pool once the host is added). */
  observe: CallObserver | undefined;

  /** `ms` bounds each call; `endpoint` names the engine in errors (`h1 (unix:///run/h1.sock)`). */
  constructor(
    readonly ms: number,
    readonly endpoint: string,
  ) {}

  /** The runner of the host's clients. */
  readonly run: CallRunner = (call) => (call.bound === 'open' ? this.open(call) : this.bounded(call));

  /** Tags a connection failure with the engine. */
  private tag(err: unknown): unknown {
    if (isConnectionError(err) && typeof err === 'object' && err !== null && !('endpoint' in err))
      Object.assign(err, { endpoint: this.endpoint });
    return err;
  }

  private seen(err: unknown): void {
    this.observe?.(!isConnectionError(err), err);
  }

  private async open<A>(call: Call<A>): Promise<A> {
    const { ac, release } = linked(call.signal);
    try {
      const r = await call.run(ac.signal);
      releaseWith(r, release);
      this.seen(undefined);
      return r;
    } catch (err) {
      release();
      this.seen(err);
      throw this.tag(err);
    }
  }

  private timeoutError(what: string): Error {
    return Object.assign(new Error(`the Docker engine ${this.endpoint} did not answer ${what} within ${this.ms} ms`), {
      code: 'ETIMEDOUT',
      endpoint: this.endpoint,
    });
  }

  private async bounded<A>(call: Call<A>): Promise<A> {
    const outer = call.signal;
    const { ac, release } = linked(outer);
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    const made = call.run(ac.signal);
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = true;
        ac.abort();
        reject(new Error('timed out'));
      }, this.ms);
    });
    // what answers after the bound is dropped (a stream that started late is closed)
    made.then((r) => (timedOut && openStream(r) ? r.destroy() : undefined)).catch(() => undefined);
    try {
      const r = await Promise.race([made, late]);
      clearTimeout(timer);
      // a stream that started still answers its caller's abort until it ends (a pull, a build, logs)
      releaseWith(r, release);
      this.seen(undefined);
      return r;
    } catch (err) {
      clearTimeout(timer);
      release();
      // a call its caller abandoned says nothing about the engine (a health check bounds its own pings)
      if (outer?.aborted === true && !timedOut) throw this.tag(err);
      const e = timedOut ? this.timeoutError(call.what) : this.tag(err);
      this.seen(e);
      throw e;
    }
  }
}
