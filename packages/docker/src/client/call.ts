/**
 * How a client method reaches the engine: every method of the client interfaces hands its call to
 * a `CallRunner`, which may bound it, observe it and name the engine in its errors (the call
 * guard, guard.ts) or just run it (`direct`).
 */

/** Per-call options every client method takes. */
export interface CallOptions {
  /** Aborts the call (a stream that started keeps answering it until it ends). */
  readonly signal?: AbortSignal | undefined;
}

/** One call to the engine, as a client method describes it to its runner. */
export interface Call<A> {
  /** `METHOD /path`, for messages (`the Docker engine h1 did not answer GET /_ping within ...`). */
  readonly what: string;
  /**
   * `bounded`: must answer (a stream: start) within the call bound; `open`: may rightly take long
   * (an upload, waiting for an exit, the event stream): its caller bounds it.
   */
  readonly bound: 'bounded' | 'open';
  /** The caller's signal. */
  readonly signal?: AbortSignal | undefined;
  /** Makes the call; `signal` is the one to hand to dockerode (the runner's, or the caller's). */
  readonly run: (signal: AbortSignal | undefined) => Promise<A>;
}

/** Runs the calls of a client. */
export type CallRunner = <A>(call: Call<A>) => Promise<A>;

/** Runs a call as it is (no bound, no observer). */
export const direct: CallRunner = (c) => c.run(c.signal);

/** A bounded call (see `Call.bound`). */
export const bounded = <A>(
  what: string,
  o: CallOptions | undefined,
  run: (signal: AbortSignal | undefined) => Promise<A>,
): Call<A> => ({ what, bound: 'bounded', signal: o?.signal, run });

/** An open call: an upload, a wait for an exit, the event stream (see `Call.bound`). */
export const open = <A>(
  what: string,
  o: CallOptions | undefined,
  run: (signal: AbortSignal | undefined) => Promise<A>,
): Call<A> => ({ what, bound: 'open', signal: o?.signal, run });

/** `{ abortSignal }` for dockerode's options, or nothing. */
export const abortOf = (signal: AbortSignal | undefined): { abortSignal?: AbortSignal } =>
  signal === undefined ? {} : { abortSignal: signal };
