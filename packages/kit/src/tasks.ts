/**
 * The task lifecycle over the registry and the runtime: `status`, `wait`, `logs`, `kill`.
 * Checks run in the documented order: input shape, location, authorization (before existence,
 * so a refused principal learns nothing), then state.
 */
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import {
  aborted,
  decodeCallContext,
  describeId,
  FINAL_STATES,
  decodeOptions,
  InputOptionsProps,
  ConnectOptionsProps,
  safeShow,
  unsupported,
  invalidEntry,
  taskSpecOf,
  KillOptionsProps,
  LogsOptionsProps,
  WaitOptionsProps,
  LesslError,
  notFound,
  permissionDenied,
  runtimeError,
  taskStatusOf,
  unavailable,
  type CallContext,
  type Element,
  type IdLike,
  type InputOptions,
  type ConnectOptions,
  type TaskConnection,
  type KillOptions,
  type LogsOptions,
  type Operation,
  type OutputChunk,
  type TaskControl,
  type TaskError,
  type TaskInput,
  type TaskResult,
  type TaskStatus,
  type WaitOptions,
} from '@lessl/core';
import { readInput } from './input.js';
import type { ActiveRun, TaskRuntime } from './runtime.js';
import { guard, principalOf, route, type Wiring } from './wiring.js';

const DEFAULT_GRACE_MS = 10_000;

/** `it`, rejecting only with a `LesslError`: anything else thrown becomes a RuntimeError. */
async function* typedErrors<A>(id: string, it: AsyncGenerator<A, void, undefined>): AsyncGenerator<A, void, undefined> {
  try {
    yield* it;
  } catch (err) {
    throw err instanceof LesslError ? err : new LesslError(runtimeError(id, 'unexpected failure', err));
  }
}

/** True once `signal` has fired (read afresh: it changes while a call waits). */
const fired = (signal: AbortSignal | undefined): boolean => signal?.aborted === true;

const concat = (chunks: readonly OutputChunk[], stream: 'stdout' | 'stderr'): Uint8Array =>
  new Uint8Array(Buffer.concat(chunks.filter((c) => c.stream === stream).map((c) => c.data)));

/** Resolves when `signal` aborts (never when it is undefined); the returned function detaches. */
const onAbort = (signal: AbortSignal | undefined, fn: () => void): (() => void) => {
  if (signal === undefined) return () => undefined;
  signal.addEventListener('abort', fn, { once: true });
  return () => signal.removeEventListener('abort', fn);
};

/** The lifecycle calls of a backend. */
export class TaskLifecycle implements TaskControl {
  constructor(
    private readonly w: Wiring,
    private readonly rt: TaskRuntime,
  ) {}

  /** Route, authorize (before existence), then find. */
  private locate(raw: IdLike, op: Operation, ctx?: CallContext): E.Either<TaskError, Element> {
    const r = route(this.w, 'task', raw);
    if (E.isLeft(r)) return r;
    const key = r.right.id.key;
    const el = this.w.registry.get(key);
    if (!this.w.authorize(principalOf(ctx), op, key, el)) return E.left(permissionDenied(key, principalOf(ctx), op));
    return el === undefined ? E.left(notFound(key)) : E.right(el);
  }

  private live(el: Element): TaskStatus {
    const st = taskStatusOf(el.attributes);
    const run = this.rt.active(el.id.key);
    if (run === undefined || FINAL_STATES.includes(st.state)) return st;
    if (run.run !== st.run) return { ...st, state: 'starting' };
    return { ...st, outputBytes: run.kept, truncated: run.truncated };
  }

  status(id: IdLike, ctx?: CallContext): TaskEither<TaskError, TaskStatus> {
    return guard<TaskError, TaskStatus>(describeId(id), async () => {
      const o = decodeCallContext(describeId(id), ctx);
      if (E.isLeft(o)) return o;
      const el = this.locate(id, 'read', o.right);
      return E.isLeft(el) ? el : E.right(this.live(el.right));
    });
  }

  wait(id: IdLike, opts?: WaitOptions): TaskEither<TaskError, TaskResult> {
    return guard<TaskError, TaskResult>(describeId(id), async () => {
      const o = decodeOptions(WaitOptionsProps, opts, 'wait options', { id: describeId(id) });
      if (E.isLeft(o)) return o;
      const signal = o.right.signal;
      if (signal?.aborted === true) return E.left(aborted(describeId(id), signal.reason));
      const first = this.locate(id, 'read', o.right);
      if (E.isLeft(first)) return first;
      const key = first.right.id.key;
      for (;;) {
        const el = this.w.registry.get(key);
        if (el === undefined) return E.left(notFound(key));
        const st = taskStatusOf(el.attributes);
        if (FINAL_STATES.includes(st.state) && this.rt.active(key) === undefined) return E.right(await this.resultOf(el, st));
        if (this.rt.closed) return E.left(unavailable(key, 'the backend was closed while waiting'));
        await nextOrAbort((fn) => this.rt.onEnd(key, fn), signal);
        if (fired(signal)) return E.left(aborted(key, signal?.reason));
      }
    });
  }

  /** A finished run's result, from the registry. */
  private async resultOf(el: Element, st: TaskStatus): Promise<TaskResult> {
    const records = await this.w.registry.readOutput(el.id.key, st.run);
    const output = records.map((r) => ({ stream: r.stream, data: r.data, offset: r.offset }));
    return {
      id: el.id,
      exitCode: st.exitCode,
      stdout: concat(output, 'stdout'),
      stderr: concat(output, 'stderr'),
      output: output.map((c) => ({ stream: c.stream, data: c.data })),
      truncated: st.truncated,
      reason: st.reason ?? 'exited',
      state: st.state === 'killed' || st.state === 'lost' ? st.state : 'exited',
      startedAt: st.startedAt,
      endedAt: st.endedAt,
    };
  }

  logs(id: IdLike, opts?: LogsOptions): AsyncIterable<OutputChunk> {
    return { [Symbol.asyncIterator]: () => typedErrors(describeId(id), this.follow(id, opts)) };
  }

  private async *follow(id: IdLike, opts?: LogsOptions): AsyncGenerator<OutputChunk, void, undefined> {
    const key = describeId(id);
    const o = decodeOptions(LogsOptionsProps, opts, 'logs options', { id: key });
    if (E.isLeft(o)) throw new LesslError(o.left);
    const { signal, since = 0 } = o.right;
    const el = this.locate(id, 'read', o.right);
    if (E.isLeft(el)) throw new LesslError(el.left);
    if (signal?.aborted === true) return;
    const st = taskStatusOf(el.right.attributes);
    const run = this.rt.active(el.right.id.key);
    if (run !== undefined && run.run >= st.run) {
      yield* this.fromRun(run, since, o.right.follow === true, signal);
      return;
    }
    for (const r of await this.w.registry.readOutput(el.right.id.key, st.run, since))
      yield slice({ stream: r.stream, data: r.data, offset: r.offset }, since);
  }

  /** Output of an active run from memory, then live until it ends (with `follow`). */
  private async *fromRun(
    run: ActiveRun,
    since: number,
    follow: boolean,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<OutputChunk, void, undefined> {
    let i = 0;
    for (;;) {
      while (i < run.chunks.length) {
        const c = run.chunks[i++];
        if (c !== undefined && c.offset + c.data.byteLength > since) yield slice(c, since);
      }
      if (!follow || run.finished || signal?.aborted === true) return;
      await nextOrAbort((fn) => run.listen(fn), signal);
    }
  }

  kill(id: IdLike, opts?: KillOptions): TaskEither<TaskError, TaskStatus> {
    return guard<TaskError, TaskStatus>(describeId(id), async () => {
      const key = describeId(id);
      const o = decodeOptions(KillOptionsProps, opts, 'kill options', { id: key });
      if (E.isLeft(o)) return o;
      const { signal: sig = 'TERM', graceMs: grace = DEFAULT_GRACE_MS } = o.right;
      const el = this.locate(id, 'compose', o.right.principal === undefined ? {} : { principal: o.right.principal });
      if (E.isLeft(el)) return el;
      const run = this.rt.active(el.right.id.key);
      if (run !== undefined) {
        await run.gate;
        await run.stop('killed', sig, grace);
        await run.done;
      }
      const now = this.w.registry.get(el.right.id.key);
      return now === undefined ? E.left(notFound(el.right.id.key)) : E.right(this.live(now));
    });
  }

  /**
   * Holds `data` as the stdin of the task's next run. Checks: options, the input's type, location,
   * authorization (as for `kill`: the right to compose), existence, then a spec that takes input.
   */
  input(id: IdLike, data: TaskInput, opts?: InputOptions): TaskEither<TaskError, void> {
    return guard<TaskError, void>(describeId(id), async () => {
      const key = describeId(id);
      const o = decodeOptions(InputOptionsProps, opts, 'input options', { id: key });
      if (E.isLeft(o)) return o;
      if (o.right.signal?.aborted === true) return E.left(aborted(key, o.right.signal.reason));
      const input = readInput(key, data);
      if (E.isLeft(input)) return input;
      const el = this.locate(id, 'compose', o.right.principal === undefined ? {} : { principal: o.right.principal });
      if (E.isLeft(el)) return el;
      if (taskSpecOf(el.right.attributes)?.interaction?.stdin !== true)
        return E.left(
          invalidEntry(`task ${el.right.id.key} takes no input: its spec does not say interaction.stdin: true`, el.right.id.key, [
            'spec.interaction.stdin',
          ]),
        );
      this.rt.giveInput(el.right.id.key, input.right);
      return E.right(undefined);
    });
  }

  /**
   * Opens a connection to `port` of the running task. Checks: options, the port's shape,
   * location, authorization (the right to compose), existence, a declared port, a running run,
   * then the driver's connection (a driver that reaches no ports: `Unsupported`).
   */
  connect(id: IdLike, port: number, opts?: ConnectOptions): TaskEither<TaskError, TaskConnection> {
    return guard<TaskError, TaskConnection>(describeId(id), async () => {
      const key = describeId(id);
      const o = decodeOptions(ConnectOptionsProps, opts, 'connect options', { id: key });
      if (E.isLeft(o)) return o;
      if (o.right.signal?.aborted === true) return E.left(aborted(key, o.right.signal.reason));
      if (!Number.isInteger(port) || port < 1 || port > 65535)
        return E.left(invalidEntry(`invalid port ${safeShow(port)}: an integer from 1 to 65535`, key, ['port']));
      const el = this.locate(id, 'compose', o.right.principal === undefined ? {} : { principal: o.right.principal });
      if (E.isLeft(el)) return el;
      const tkey = el.right.id.key;
      if (!(taskSpecOf(el.right.attributes)?.ports ?? []).includes(port))
        return E.left(invalidEntry(`task ${tkey} does not declare port ${port} in spec.ports`, tkey, ['port']));
      const run = this.rt.active(tkey);
      if (run === undefined || run.finished)
        return E.left(unavailable(tkey, `task ${tkey} is not running (${taskStatusOf(el.right.attributes).state})`));
      const conn = run.connect(port, o.right.signal);
      return conn === undefined ? E.left(unsupported(tkey, 'tasks.connect', 'this backend reaches no task ports')) : await conn;
    });
  }
}

/** A chunk cut to start at byte `since`. */
const slice = (c: OutputChunk, since: number): OutputChunk =>
  c.offset >= since ? c : { stream: c.stream, data: c.data.subarray(since - c.offset), offset: since };

/** Waits for the next call of a listener (`listen` answers how to stop listening), or for `signal` to abort. */
const nextOrAbort = (listen: (fn: () => void) => () => void, signal: AbortSignal | undefined): Promise<void> =>
  new Promise<void>((res) => {
    const off = listen(() => {
      off();
      detach();
      res();
    });
    const detach = onAbort(signal, () => {
      off();
      res();
    });
  });
