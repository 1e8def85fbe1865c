/**
 * The warm pool's figures: what a backend with a pool reports and what the task service answers
 * (`GET|PUT /v1/pool`), one shape for both sides of the wire.
 */

/** One pool profile's figures. */
export interface PoolProfileView {
  /** The profile's key (its image and executor options). */
  readonly key: string;
  readonly image: string;
  /** Warm containers waiting for a task, and being made. */
  readonly ready: number;
  readonly starting: number;
  /** One-shot tasks that took a warm container, that found none, and containers that failed to start. */
  readonly hits: number;
  readonly misses: number;
  readonly failures: number;
  /** How its warm containers run tasks: through the in-container agent, or the engine's exec (absent: exec). */
  readonly runsWith?: 'agent' | 'exec';
}

/** The pool's figures, per profile and in all. */
export interface PoolView {
  readonly profiles: readonly PoolProfileView[];
  readonly hits: number;
  readonly misses: number;
  /** Ready and starting containers, all profiles. */
  readonly containers: number;
  /** Their memory limits, summed, and the cap. */
  readonly memoryBytes: number;
  readonly memoryCapBytes: number;
}
