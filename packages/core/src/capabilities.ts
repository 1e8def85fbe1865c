/**
 * The capability manifest: what a backend supports, answered by the backend itself (as
 * abstract-level's `db.supports`), so callers read it instead of guessing or casting.
 */

/** What a backend supports. Every field is present; `false` means the feature answers `Unsupported`. */
export interface Capabilities {
  /** Images and volumes take parents. */
  readonly parents: boolean;
  /** Images and volumes take data streams at create. */
  readonly data: boolean;
  /** The registry persists across a close and a reopen at the same location. */
  readonly reopen: boolean;
  /** Tasks run as processes (the composer starts what is bound). */
  readonly tasks: boolean;
  /** A task can be bound into an executor that already runs another (exec into a running executor). */
  readonly execIntoRunning: boolean;
  /** Daemon tasks (kept running until unbound or killed). */
  readonly daemons: boolean;
  /** Restart policies on tasks (`spec.restart`). */
  readonly restartPolicies: boolean;
  /** Several engines behind one backend (`hosts`). */
  readonly hosts: boolean;
  /** Executors as Docker Swarm services. */
  readonly swarm: boolean;
  /** A pool of warm executors (`pool`). */
  readonly pool: boolean;
  /**
   * Warm one-shot tasks run through an agent inside the warm container (a fork and an exec, no
   * engine API call per task) rather than the engine's exec.
   */
  readonly warmAgent: boolean;
  /** Image sources beyond data: registry, URL, git, a path (`refresh`). */
  readonly imageSources: boolean;
  /** Task credentials resolved at start (`spec.credentials`). */
  readonly credentials: boolean;
  /** Tasks serve the ports their spec declares (`spec.ports`), reached with `tasks.connect`. */
  readonly ports: boolean;
}
