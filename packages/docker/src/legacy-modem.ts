/**
 * The transitional guard of the raw dockerode client (`Host.docker`, deprecated): the drivers
 * not yet on the clients (client/) still call dockerode directly, so its modem is bounded and
 * observed like the clients' calls are (`CallGuard`). Calls the clients make are guarded by
 * their `CallGuard` already and pass through untouched (no call is counted twice). This module
 * goes when nothing reads `Host.docker` any more.
 */
import type Docker from 'dockerode';
import { isConnectionError } from './errors.js';
import { prop } from './fields.js';
import { endpointOf, isGuardedSignal, type CallObserver } from './guard.js';

interface DialOptions {
  path?: string;
  method?: string;
  file?: unknown;
  abortSignal?: AbortSignal;
  options?: unknown;
}
type Dial = (options: DialOptions, callback: (err: unknown, data: unknown) => void) => void;

/** Calls that may rightly stay silent for long: waiting for an exit, the event stream. */
const UNBOUNDED = /\/(wait|events)(\?|$)/;

/**
 * @deprecated For `Host.docker` only (see the module comment). Bounds every call to the engine: a call that has not answered within `ms` (for streams: has not
 * started within `ms`) is aborted and fails with ETIMEDOUT naming the engine and the call, which
 * maps to `Unavailable`. Uploads and `wait`/`events` are not bounded here (their callers bound them).
 * Connection failures are tagged with `name` (the host) so errors say which engine failed;
 * `observe` hears whether each call reached the engine (per-host error tracking).
 */
export const guardCalls = (docker: Docker, ms: number, name?: string, observe?: CallObserver): void => {
  const modem = docker.modem as unknown as { dial: Dial; lesslGuarded?: boolean; lesslObserve?: CallObserver };
  if (observe !== undefined) modem.lesslObserve = observe; // a client guarded before (at open) gets its host's observer
  if (modem.lesslGuarded === true) return;
  const dial = modem.dial.bind(modem);
  const endpoint = name === undefined ? endpointOf(docker) : `${name} (${endpointOf(docker)})`;
  const tag = (err: unknown): unknown => {
    if (isConnectionError(err) && typeof err === 'object' && err !== null && !('endpoint' in err))
      Object.assign(err, { endpoint });
    return err;
  };
  const seen = (err: unknown): void => modem.lesslObserve?.(!isConnectionError(err), err);
  modem.lesslGuarded = true;
  modem.dial = (options, callback) => {
    // a client's call, guarded by its CallGuard (the signal is at the top, or in the call's options)
    if (isGuardedSignal(options.abortSignal) || isGuardedSignal(prop(options.options, 'abortSignal')))
      return dial(options, callback);
    if (options.file !== undefined || UNBOUNDED.test(options.path ?? ''))
      return dial(options, (err, data) => {
        seen(err);
        callback(tag(err), data);
      });
    const ac = new AbortController();
    const outer = options.abortSignal;
    if (outer?.aborted === true) ac.abort(outer.reason);
    const relay = (): void => ac.abort(outer?.reason);
    outer?.addEventListener('abort', relay, { once: true });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, ms);
    dial({ ...options, abortSignal: ac.signal }, (err, data) => {
      clearTimeout(timer);
      // a stream that started still answers its caller's abort until it ends (a pull, a build, logs)
      const stream = data as { once?: (ev: string, f: () => void) => void; destroyed?: boolean } | undefined;
      const release = (): void => outer?.removeEventListener('abort', relay);
      if (typeof stream?.once === 'function' && stream.destroyed !== true) stream.once('close', release);
      else release();
      // a call its caller abandoned says nothing about the engine (a health check bounds its own pings)
      if (outer?.aborted === true && !timedOut) return callback(tag(err), data);
      if (timedOut && err !== null && err !== undefined) {
        const e = Object.assign(
          new Error(
            `the Docker engine ${endpoint} did not answer ${options.method ?? 'GET'} ${options.path ?? ''} within ${ms} ms`,
          ),
          { code: 'ETIMEDOUT', endpoint },
        );
        seen(e);
        return callback(e, data);
      }
      seen(err);
      callback(tag(err), data);
    });
  };
};
