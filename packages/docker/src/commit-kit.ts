/**
 * The commit of a plan, written once for the container and the Swarm executor drivers: the
 * steps in order (create, unbinds, leaves, joins, binds), a fault hook or an aborted signal
 * failing a step, the rollback of what the earlier steps did, and the retire of what the new
 * composition replaced once the registry has the commit. A driver supplies its `MainSteps`: what
 * runs an executor's main task (a container, a service), how a bind starts a task and how the
 * unbind of the main task stops it.
 */
import * as E from 'fp-ts/lib/Either.js';
import {
  aborted,
  decodeTaskSpec,
  describeCause,
  runtimeError,
  unsupported,
  type AnyError,
  type DeleteError,
  type TaskSpec,
} from '@lessl/core';
import type {
  CommitPlan,
  DriverCommit,
  DriverStepResult as StepResult,
  DriverTaskResult as TaskResult,
  PlanStep,
} from '@lessl/kit';
import { deleteErrorOf } from './driver-errors.js';
import { fromDocker, isDockerError } from './errors.js';

/** Test hook: make a step fail. */
export type FaultHook = (step: PlanStep) => AnyError | undefined;

/**
 * A Docker failure while destroying an executor's objects, as `delete` answers it: Docker's
 * answer mapped (`fromDocker`); one `delete` cannot answer (a 409 `Conflict`) is a `RuntimeError`.
 */
export const destroyErrorOf = (id: string, err: unknown): DeleteError => deleteErrorOf(fromDocker(id, err), err);

/** Rolls back what one step did. */
export type Undo = () => Promise<void>;

/**
 * What a commit needs of an executor driver, for one plan: the executor's main process as the
 * steps change it.
 */
export interface MainSteps {
  /** Seconds between TERM and KILL when an unbind stops a task. */
  readonly graceSeconds: number;
  /** What the engine cannot do while a main process runs (the reason a join or leave is refused). */
  readonly storageFixed: string;
  /** True while the executor runs a main process: joins and leaves of storage are refused. */
  running(): boolean;
  /** What runs `task` when it is the executor's main task (a container, a service), else null. */
  mainOf(task: string): string | null;
  /** The unbind of the main task: stops `id` (kept until `retire`), answers its exit code. */
  stopMain(id: string): Promise<number | null>;
  /**
   * The bind of a task: starts it; pushes on `undo` what stops it again on a rollback, and on
   * `retired` what it replaces.
   */
  bind(step: PlanStep, undo: Undo[], retired: string[]): Promise<E.Either<AnyError, void>>;
  /** The executor's attributes after the steps. */
  describe(): Record<string, unknown>;
  /** Removes what the commit replaced (a container, a service), once the registry has the commit. */
  remove(id: string): Promise<void>;
}

/** The result of a step that succeeded. */
const success = (step: PlanStep): StepResult => ({ id: step.id, op: step.op, status: 'SUCCESS' });

/** The task spec of a task member of the plan, decoded (`InvalidEntry` when the record holds none). */
export const taskSpecOf = (plan: CommitPlan, task: string): E.Either<AnyError, TaskSpec> =>
  decodeTaskSpec(task, plan.elements.get(task)?.attributes.spec);

/** An executor's storage as committed (its attributes `rootfs`, `mounts`, `readOnlyRootfs`). */
export const layoutOf = (plan: CommitPlan): Record<string, unknown> => ({
  rootfs: plan.after.find((m) => m.id.kind === 'image')?.id.key ?? null,
  mounts: plan.after
    .filter((m) => m.id.kind === 'volume')
    .map((m) => ({ volume: m.id.key, at: m.mountpoint, readOnly: m.readOnly })),
  readOnlyRootfs: plan.options.readOnlyRootfs === true,
});

/** Join or leave of an image or volume on a running executor: Unsupported (`why`: what the engine cannot do). */
export const storageChangeRefused = (step: PlanStep, running: boolean, why: string): AnyError | undefined => {
  const kind = step.member?.id.kind;
  if (!running || (step.op !== 'join' && step.op !== 'leave') || (kind !== 'image' && kind !== 'volume')) return undefined;
  return unsupported(step.id, `${step.op} of ${kind}s on a running executor`, `${why}; unbind its task first`);
};

/** The result an unbind reports for a task it stopped (its output is read with `tasks.logs`). */
export const stoppedResult = (id: string, exitCode: number | null): TaskResult => ({
  id,
  exitCode,
  stdout: new Uint8Array(),
  stderr: new Uint8Array(),
  output: [],
  truncated: false,
  reason: 'stopped',
  state: 'killed',
  startedAt: null,
  endedAt: new Date().toISOString(),
});

/**
 * The unbind of a task: its run is stopped (TERM, then KILL after the grace period); when it is
 * the executor's main task, `stopMain` stops what runs it and answers the exit code.
 */
export const unbindTask = async (
  plan: CommitPlan,
  step: PlanStep,
  graceSeconds: number,
  stopMain: (() => Promise<number | null>) | undefined,
): Promise<StepResult> => {
  await plan.runs.stop(step.id, 'TERM', graceSeconds * 1000);
  const ok = success(step);
  return stopMain === undefined ? ok : { ...ok, task: stoppedResult(step.id, await stopMain()) };
};

/** One step of a commit: its result, or an error to roll back; `undo` collects what rolls it back. */
export type StepApplier = (step: PlanStep, undo: Undo[]) => Promise<E.Either<AnyError, StepResult>>;

/**
 * The steps of a commit on a driver's main process: storage refused while it runs, unbind (the
 * main process stopped and kept in `retired`), bind.
 */
export const mainStepApplier =
  (plan: CommitPlan, main: MainSteps, retired: string[]): StepApplier =>
  async (step, undo) => {
    const refused = storageChangeRefused(step, main.running(), main.storageFixed);
    if (refused !== undefined) return E.left(refused);
    if (step.member?.id.kind !== 'task' || (step.op !== 'bind' && step.op !== 'unbind')) return E.right(success(step));
    if (step.op === 'bind') {
      const r = await main.bind(step, undo, retired);
      return E.isLeft(r) ? r : E.right(success(step));
    }
    const id = main.mainOf(step.id);
    const stop =
      id === null
        ? undefined
        : async (): Promise<number | null> => {
            const code = await main.stopMain(id);
            retired.push(id);
            return code;
          };
    return E.right(await unbindTask(plan, step, main.graceSeconds, stop));
  };

/** The error of a step that threw: Docker's answer mapped, anything else a `RuntimeError`. */
const thrown = (step: PlanStep, err: unknown): AnyError =>
  isDockerError(err) ? fromDocker(step.id, err) : runtimeError(step.id, `step failed: ${describeCause(err)}`, err);

/** Why a step fails before it is applied: the fault hook's error, or the commit's aborted signal. */
const failureBefore = (plan: CommitPlan, step: PlanStep, faults: FaultHook | undefined): AnyError | undefined =>
  faults?.(step) ?? (plan.signal?.aborted === true ? aborted(step.id, plan.signal.reason) : undefined);

/**
 * Applies a plan's steps in order (a fault hook or an aborted signal fails a step); on a failing
 * step, runs the collected undos in reverse and answers the error with the results so far.
 */
export const commitSteps = async (
  plan: CommitPlan,
  faults: FaultHook | undefined,
  apply: StepApplier,
  describe: () => Record<string, unknown>,
): Promise<DriverCommit> => {
  const results: StepResult[] = [];
  const undo: Undo[] = [];
  const failWith = async (step: PlanStep, error: AnyError): Promise<DriverCommit> => {
    results.push({ id: step.id, op: step.op, status: 'ERROR', error });
    for (const u of undo.reverse()) await u().catch(() => undefined);
    return E.left({ error, results });
  };
  for (const step of plan.steps) {
    const fault = failureBefore(plan, step, faults);
    if (fault !== undefined) return failWith(step, fault);
    const r = await apply(step, undo).catch((err: unknown) => E.left(thrown(step, err)));
    if (E.isLeft(r)) return failWith(step, r.left);
    results.push(r.right);
  }
  return E.right({ results, attributes: describe() });
};

/**
 * Commits a plan on a driver's main process: the steps in order with rollback, then (when the
 * commit replaced something) a `retire` that removes it once the registry has the commit: a
 * rollback, or a registry write that fails, leaves it as the record says.
 */
export const commitPlan = async (plan: CommitPlan, faults: FaultHook | undefined, main: MainSteps): Promise<DriverCommit> => {
  const retired: string[] = [];
  const r = await commitSteps(plan, faults, mainStepApplier(plan, main, retired), () => main.describe());
  if (E.isLeft(r) || retired.length === 0) return r;
  return E.right({ ...r.right, retire: async () => void (await Promise.all(retired.map((id) => main.remove(id)))) });
};
