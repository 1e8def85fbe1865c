/**
 * The task runtime (docs/lifecycle.md): tracks the runs drivers started, keeps their output
 * (capped, flushed to the registry as it arrives), applies deadlines and kills, and persists
 * each run's end exactly once: the task's final status, the executor's composition (the task
 * unbound), the rest of the output and the `unbound` event, in one batch.
 */
import type { Duplex } from 'node:stream';
import type * as E from 'fp-ts/lib/Either.js';
import {
  type TaskError,
  type Element,
  FINAL_STATES,
  stateForReason,
  taskStatusOf,
  type EndReason,
  type OutputChunk,
  type TaskSpec,
  type TaskStatus,
  logError,
  safeLogger,
  type Logger,
} from '@lessl/core';
import { idOfKey, type RunOpener, type RunOutcome, type RunSink, type Secrets, type StartedRun } from './drivers.js';
import { HeldInput, NO_INPUT } from './input.js';
import { NO_SECRETS } from './spec.js';
import type { CompositionRecord, EventDraft, MemberRecord, OutputRecord } from './records.js';
import type { RegistryPort } from './port.js';

/** Default bytes of output kept per run. */
export const DEFAULT_OUTPUT_BYTES = 1024 * 1024;
/** How long output may wait in memory before it is flushed to the registry. */
const FLUSH_MS = 200;
/** Flush at once past this many pending bytes. */
const FLUSH_BYTES = 64 * 1024;

/** Options of the runtime. */
export interface RuntimeOptions {
  /** Output kept per run unless the spec says otherwise (default 1 MiB). */
  readonly outputBytes?: number;
  /** Where task starts and ends are reported (default: nowhere). */
  readonly logger?: Logger;
}

const now = (): string => new Date().toISOString();

/** One run: the driver's sink, the kept output, the waiters. */
export class ActiveRun implements RunSink {
  readonly chunks: OutputChunk[] = [];
  kept = 0;
  truncated = false;
  stopping: EndReason | undefined;
  process: Readonly<Record<string, unknown>> = {};
  /** Resolved with true once the commit that started the run is persisted, false if it was rolled back. */
  readonly gate: Promise<boolean>;
  openGate!: (persisted: boolean) => void;
  /** Resolves when the end is persisted (or the run was discarded). */
  readonly done: Promise<void>;
  private finish!: () => void;
  private proc?: StartedRun;
  private pending: OutputRecord[] = [];
  private pendingBytes = 0;
  private flushTimer: NodeJS.Timeout | undefined;
  private deadline: NodeJS.Timeout | undefined;
  private readonly listeners = new Set<() => void>();
  private ending = false;
  finished = false;
  /** Resolved credentials: held in memory for the driver only (a private field: never copied, logged or persisted). */
  #secrets: Secrets = NO_SECRETS;
  /** Output is dropped, not kept (`log.destination: 'none'`). */
  private readonly discard: boolean;

  constructor(
    private readonly rt: TaskRuntime,
    readonly task: string,
    readonly executor: string,
    readonly run: number,
    readonly spec: TaskSpec,
    readonly outputCap: number,
    readonly startedAt: string = now(),
  ) {
    this.gate = new Promise((res) => (this.openGate = res));
    this.done = new Promise((res) => (this.finish = res));
    this.discard = spec.log?.destination === 'none';
  }

  get secrets(): Secrets {
    return this.#secrets;
  }

  /** The run's input (see `RunSink.stdin`); set before the driver starts it. */
  stdin: AsyncIterable<Uint8Array> | undefined = undefined;

  /** @internal hands the run its resolved credentials (before the driver starts it). */
  setSecrets(s: Secrets): void {
    this.#secrets = s;
  }

  output(stream: 'stdout' | 'stderr', data: Uint8Array): void {
    if (this.finished || this.discard || data.byteLength === 0) return;
    const room = this.outputCap - this.kept;
    if (room <= 0) {
      this.truncated = true;
      return;
    }
    const kept = data.byteLength > room ? data.slice(0, room) : data;
    if (kept !== data) this.truncated = true;
    const chunk: OutputChunk = { stream, data: kept, offset: this.kept };
    this.kept += kept.byteLength;
    this.chunks.push(chunk);
    this.pending.push({ task: this.task, run: this.run, offset: chunk.offset, stream, data: kept });
    this.pendingBytes += kept.byteLength;
    this.notify();
    if (this.pendingBytes >= FLUSH_BYTES) this.flushSoon();
    else this.flushTimer ??= setTimeout(() => this.flushSoon(), FLUSH_MS).unref();
  }

  started(run: StartedRun): void {
    this.proc = run;
    this.process = run.process;
  }

  /** Opens a connection to `port` in the run's executor, through its driver (`undefined`: the driver reaches no ports). */
  connect(port: number, signal: AbortSignal | undefined): Promise<E.Either<TaskError, Duplex>> | undefined {
    return this.proc?.connect?.(port, signal);
  }

  /** Asks the process to end, for `reason`; resolves once the signal is delivered. */
  async stop(reason: EndReason, signal: 'TERM' | 'KILL', graceMs: number): Promise<void> {
    this.stopping ??= reason;
    await this.proc?.kill(signal, graceMs).catch(() => undefined);
  }

  /** Arms the spec's deadline, once the run is persisted. */
  armDeadline(): void {
    const ms = this.spec.limits?.deadlineMs;
    if (ms === undefined) return;
    const left = Math.max(0, ms - (Date.now() - Date.parse(this.startedAt)));
    // a kill that fails leaves the run as it is: its end is still reported by the driver
    this.deadline = setTimeout(() => this.stop('deadline', 'KILL', 0).catch(() => undefined), left);
    this.deadline.unref();
  }

  end(outcome: RunOutcome): Promise<void> {
    if (this.ending || this.finished) return this.done;
    this.ending = true;
    void (async () => {
      try {
        if ((await this.gate) && !this.rt.closed) await this.rt.persistEnd(this, outcome);
        else if (this.rt.closed) return; // not persisted: the next open finds the end where it is
        await outcome.cleanup?.().catch(() => undefined);
      } catch (err) {
        // the registry is closing: the end is found again by reconciliation on the next open
        this.rt.log.warn(
          { task: this.task, executor: this.executor, run: this.run, err: logError(err) },
          'could not persist the end of a task (reconciled on the next open)',
        );
      } finally {
        this.close();
      }
    })().catch(() => this.finish()); // close() failed: still wake whoever waits for the end
    return this.done;
  }

  /** Calls `fn` whenever output arrives or the run ends. */
  listen(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Takes the output not yet flushed. */
  takePending(): OutputRecord[] {
    const p = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    if (this.flushTimer !== undefined) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    return p;
  }

  /** `flush` in the background: a failure only loses output the run's end writes again. */
  private flushSoon(): void {
    this.flush().catch(() => undefined);
  }

  /** Writes pending output to the registry (no event). */
  async flush(): Promise<void> {
    if (!(await this.gate)) return;
    const p = this.takePending();
    if (p.length > 0) await this.rt.registry.commit({ putOutput: p }).catch(() => undefined);
  }

  /** Ends the run's bookkeeping (after its end is persisted, or when it is discarded). */
  close(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.deadline !== undefined) clearTimeout(this.deadline);
    if (this.flushTimer !== undefined) clearTimeout(this.flushTimer);
    this.rt.forget(this);
    this.notify();
    this.finish();
  }

  private notify(): void {
    for (const fn of this.listeners) fn();
  }
}

/** Tracks the runs of one backend. */
export class TaskRuntime {
  private readonly runs = new Map<string, ActiveRun>();
  private readonly waiters = new Map<string, Set<() => void>>();
  /** Input given to the next run of a task (`tasks.input`), in memory only. */
  private readonly inputs = new Map<string, HeldInput>();
  private readonly offDeleted: () => void;
  private readonly defaultCap: number;
  /** Where task starts and ends are reported. */
  readonly log: Logger;

  constructor(
    readonly registry: RegistryPort,
    opts: RuntimeOptions = {},
  ) {
    this.defaultCap = opts.outputBytes ?? DEFAULT_OUTPUT_BYTES;
    this.log = safeLogger(opts.logger);
    // input held for a task that is deleted goes with it
    this.offDeleted = registry.events.listen((e) => {
      if (e.type === 'deleted' && e.id.kind === 'task') this.inputs.delete(e.id.key);
    });
  }

  /** Holds `input` for the next run of `task` (replacing input given before). */
  giveInput(task: string, input: HeldInput): void {
    this.inputs.set(task, input);
  }

  /** The stdin of a run of `task` with `spec`: its held input, or an empty one; none when the spec takes no input. */
  private takeInput(task: string, spec: TaskSpec): AsyncIterable<Uint8Array> | undefined {
    if (spec.interaction?.stdin !== true) return undefined;
    const held = this.inputs.get(task);
    this.inputs.delete(task);
    return held ?? NO_INPUT;
  }

  /** The active run of a task, if any. */
  active(task: string): ActiveRun | undefined {
    return this.runs.get(task);
  }

  /** A run opener for one commit; `opened` lists what the driver opened. */
  opener(
    executor: string,
    specs: (task: string) => TaskSpec,
    secrets: (task: string) => Secrets = () => NO_SECRETS,
  ): RunOpener & { readonly opened: ActiveRun[] } {
    const opened: ActiveRun[] = [];
    return {
      opened,
      stop: async (task, signal, graceMs) => {
        await this.runs.get(task)?.stop('stopped', signal, graceMs);
      },
      open: (task: string): RunSink => {
        const el = this.registry.get(task);
        const prev = el === undefined ? 0 : taskStatusOf(el.attributes).run;
        const spec = specs(task);
        const run = new ActiveRun(this, task, executor, prev + 1, spec, spec.limits?.outputBytes ?? this.defaultCap);
        run.setSecrets(secrets(task));
        run.stdin = this.takeInput(task, spec);
        this.runs.set(task, run);
        opened.push(run);
        return run;
      },
    };
  }

  /** The status a started run is persisted with. */
  runningStatus(r: ActiveRun): TaskStatus {
    return {
      state: 'running',
      run: r.run,
      executor: idOfKey(r.executor),
      exitCode: null,
      reason: null,
      startedAt: r.startedAt,
      endedAt: null,
      outputBytes: r.kept,
      truncated: r.truncated,
      process: { ...r.process },
    };
  }

  /** After the commit: runs it persisted go live (deadlines armed); runs it rolled back are dropped. */
  settle(runs: readonly ActiveRun[], persisted: boolean): void {
    for (const r of runs) {
      r.openGate(persisted);
      if (persisted) r.armDeadline();
      else {
        // input the rolled-back run never read stays for the next one
        if (r.stdin instanceof HeldInput && !r.stdin.touched && !this.inputs.has(r.task)) this.inputs.set(r.task, r.stdin);
        r.close();
      }
    }
  }

  /** Calls `fn` once the next end of `task` is persisted. */
  onEnd(task: string, fn: () => void): () => void {
    let s = this.waiters.get(task);
    if (s === undefined) this.waiters.set(task, (s = new Set()));
    s.add(fn);
    return () => {
      s.delete(fn);
      if (s.size === 0) this.waiters.delete(task);
    };
  }

  /** @internal a run is finished. */
  forget(r: ActiveRun): void {
    if (this.runs.get(r.task) === r) this.runs.delete(r.task);
    for (const fn of [...(this.waiters.get(r.task) ?? [])]) fn();
  }

  /**
   * Persists a run's end, once: the task's final status, its member unbound in the executor's
   * composition (executor revision + 1, driver attributes merged), the rest of its output and
   * `unbound`. A run whose end was already recorded (an unbind, a later run) only flushes output.
   */
  async persistEnd(r: ActiveRun, outcome: RunOutcome): Promise<void> {
    const reg = this.registry;
    await reg.locks.with([r.executor, r.task], async () => {
      const task = reg.get(r.task);
      const output = r.takePending();
      const st = task === undefined ? undefined : taskStatusOf(task.attributes);
      if (task === undefined || st === undefined || st.run !== r.run || FINAL_STATES.includes(st.state)) {
        // the end was recorded already (an unbind): keep the output and its size, and the exit code if unknown
        const final = { ...st, outputBytes: r.kept, truncated: r.truncated, exitCode: st?.exitCode ?? outcome.exitCode };
        const sizes =
          task !== undefined && st !== undefined && st.run === r.run
            ? [{ ...task, attributes: { ...task.attributes, status: final } }]
            : [];
        await reg.commit({ put: sizes, putOutput: output });
        return;
      }
      const reason: EndReason = r.stopping ?? outcome.reason ?? 'exited';
      const status: TaskStatus = {
        ...st,
        state: stateForReason(reason),
        exitCode: outcome.exitCode,
        reason,
        endedAt: now(),
        outputBytes: r.kept,
        truncated: r.truncated,
        ...(outcome.process === undefined ? {} : { process: { ...st.process, ...outcome.process } }),
      };
      const { put, putComposition, events } = this.endChange(r, task, status, outcome);
      await reg.commit({ put, putComposition, putOutput: output, events });
      this.log.info(
        {
          ...{ task: r.task, executor: r.executor, run: r.run, exitCode: outcome.exitCode, reason },
          durationMs: Math.max(0, Date.now() - Date.parse(r.startedAt)),
        },
        'task ended',
      );
    });
  }

  /** The records and events of a run's end: the task's status, its member unbound (executor revision + 1), `unbound`. */
  private endChange(
    r: ActiveRun,
    task: Element,
    status: TaskStatus,
    outcome: RunOutcome,
  ): { put: Element[]; putComposition: CompositionRecord[]; events: EventDraft[] } {
    const reg = this.registry;
    const reason = status.reason ?? 'exited';
    const x = reg.get(r.executor);
    const comp = reg.composition(r.executor);
    const revision = (x?.revision ?? 0) + 1;
    const events: EventDraft[] = [];
    const put: Element[] = [{ ...task, attributes: { ...task.attributes, status } }];
    let putComposition: CompositionRecord[] = [];
    if (x !== undefined && comp !== undefined && comp.members.some((m) => m.id === r.task && m.state === 'bound')) {
      put.push({ ...x, revision, modified: now(), attributes: { ...x.attributes, ...(outcome.executor ?? {}) } });
      const unbound = comp.members.map((m): MemberRecord => (m.id === r.task ? { ...m, state: 'unbound' } : m));
      putComposition = [{ ...comp, members: unbound }];
      events.push({ type: 'modified', id: r.executor, revision, detail: { composition: true, reason } });
    }
    events.push({
      type: 'unbound',
      id: r.task,
      revision: x === undefined ? task.revision : revision,
      detail: { executor: r.executor, exitCode: outcome.exitCode, reason, run: r.run },
    });
    return { put, putComposition, events };
  }

  /**
   * On open: a task the registry says is running gets a run again, with its kept output loaded,
   * so that `wait`/`logs`/`kill` work; the driver then follows it or ends it.
   */
  async resume(task: string, status: TaskStatus, spec: TaskSpec): Promise<ActiveRun> {
    const r = new ActiveRun(
      this,
      task,
      status.executor?.key ?? '',
      status.run,
      spec,
      spec.limits?.outputBytes ?? this.defaultCap,
      status.startedAt ?? now(),
    );
    for (const o of await this.registry.readOutput(task, status.run)) {
      r.chunks.push({ stream: o.stream, data: o.data, offset: o.offset });
      r.kept = o.offset + o.data.byteLength;
    }
    r.truncated = status.truncated;
    r.process = status.process ?? {};
    this.runs.set(task, r);
    r.openGate(true);
    return r;
  }

  /** Every active run. */
  all(): ActiveRun[] {
    return [...this.runs.values()];
  }

  /** True once the backend is closing: waiters wake up and answer that. */
  closed = false;

  /** Flushes pending output of every run, stops its timers and wakes every waiter (runs stay where they are). */
  async close(): Promise<void> {
    this.closed = true;
    this.offDeleted();
    this.inputs.clear();
    await Promise.all(this.all().map((r) => r.flush()));
    for (const r of this.all()) r.close();
    for (const s of [...this.waiters.values()]) for (const fn of [...s]) fn();
  }
}
