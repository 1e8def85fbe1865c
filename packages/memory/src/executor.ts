/**
 * The memory backend's executors: state machines with fake processes. Binding a task starts
 * `run(spec, io)`: on a stopped executor the task becomes its main process (the executor runs
 * while it does); on a running one it runs beside the main process, like an exec.
 */
import * as E from 'fp-ts/lib/Either.js';
import { aborted, restarts, type AnyError, type TaskSpec } from '@lessl/core';
import type {
  CommitPlan,
  DriverCommit,
  DriverStepResult as StepResult,
  ExecutorDriver,
  PlanStep,
  RunOutcome,
  RunSink,
} from '@lessl/kit';
import type { FakeExit, FakeIO, FakeProcess } from './process.js';
import { FakePorts } from './ports.js';

/** A commit hook of the tests: the error a step fails with, or `undefined` to let it run. */
export type FaultHook = (step: PlanStep) => AnyError | undefined;

/** What an executor is between steps: running or stopped, and the task that is its main process. */
interface Machine {
  state: 'running' | 'stopped';
  mainTask: string | null;
}

const encoder = new TextEncoder();
const bytes = (d: string | Uint8Array): Uint8Array => (typeof d === 'string' ? encoder.encode(d) : d);

/** Resolves after `ms`, or at once when `signal` aborts. */
export const sleepUnless =
  (signal: AbortSignal) =>
  (ms: number): Promise<void> =>
    new Promise<void>((res) => {
      if (signal.aborted) return res();
      const t = setTimeout(done, ms);
      function done(): void {
        clearTimeout(t);
        signal.removeEventListener('abort', done);
        res();
      }
      signal.addEventListener('abort', done, { once: true });
    });

/** A process's stdin: one reader of the run's input shared by every read, ending when the process is killed. */
export class FakeStdin implements AsyncIterable<Uint8Array> {
  private it: AsyncIterator<Uint8Array> | undefined;
  private ended = false;
  /** Resolves (with undefined) when the process is killed. */
  private readonly killed: Promise<undefined>;

  constructor(
    private readonly input: AsyncIterable<Uint8Array> | undefined,
    private readonly signal: AbortSignal,
  ) {
    this.killed = new Promise((res) => signal.addEventListener('abort', () => res(undefined), { once: true }));
  }

  /** The next chunk, or undefined at the end of the input (or once the process is killed). */
  async next(): Promise<Uint8Array | undefined> {
    if (this.ended || this.input === undefined || this.signal.aborted) return undefined;
    this.it ??= this.input[Symbol.asyncIterator]();
    const r = await Promise.race([this.it.next().catch(() => undefined), this.killed]);
    if (r === undefined || r.done === true) this.ended = true;
    return r === undefined || r.done === true ? undefined : r.value;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    for (let c = await this.next(); c !== undefined; c = await this.next()) yield c;
  }

  /** Everything left, in one array. */
  async readAll(): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    for await (const c of this) parts.push(c);
    return new Uint8Array(Buffer.concat(parts));
  }

  /** The process is gone: the producer of what it did not read is told (its `return`). */
  close(): void {
    this.ended = true;
    void Promise.resolve(this.it?.return?.()).catch(() => undefined);
  }
}

/** What a fake process of `sink`'s run gets: its output goes to the sink, its credential files and stdin are readable. */
/** What a fake process gets: output to `output`, the `files` credentials put, its stdin, its signal. */
export const fakeIO = (
  output: (stream: 'stdout' | 'stderr', data: Uint8Array) => void,
  files: ReadonlyMap<string, Uint8Array>,
  signal: AbortSignal,
  stdin: FakeStdin,
  ports?: FakePorts,
): FakeIO => ({
  files,
  stdout: (d) => output('stdout', bytes(d)),
  stderr: (d) => output('stderr', bytes(d)),
  signal,
  sleep: sleepUnless(signal),
  stdin,
  readAll: () => stdin.readAll(),
  listen: (port, accept) => ports?.listen(port, accept),
});

/** The run's spec with the credentials' environment added. */
const specWithSecrets = (sink: RunSink): TaskSpec => {
  const { env } = sink.secrets;
  return Object.keys(env).length === 0 ? sink.spec : { ...sink.spec, env: { ...sink.spec.env, ...env } };
};

/** The exit code of a fake process's answer. */
const codeOf = (exit: FakeExit): number => (typeof exit === 'number' ? exit : exit.exitCode);

/** True when a daemon's restart policy runs it again after this exit (`runs` restarts so far). */
const again = (spec: TaskSpec, exit: FakeExit, runs: number, signal: AbortSignal): boolean => {
  if (!restarts(spec) || signal.aborted) return false;
  const max = spec.restart?.maxRetries;
  if (max !== undefined && runs >= max) return false;
  return spec.restart?.policy === 'always' || codeOf(exit) !== 0;
};

/** Runs the process, and again as the restart policy says (daemons only), unless killed; answers the last exit. */
const runWithRestarts = async (run: FakeProcess, sink: RunSink, io: FakeIO): Promise<FakeExit> => {
  const spec = specWithSecrets(sink);
  for (let runs = 0; ; runs++) {
    let exit: FakeExit;
    try {
      exit = await run(spec, io);
    } catch (err) {
      io.stderr(`fake process failed: ${err instanceof Error ? err.message : String(err)}\n`);
      exit = 1;
    }
    if (!again(sink.spec, exit, runs, io.signal)) return exit;
    await new Promise((r) => setTimeout(r, 0));
  }
};

/** How the run ended: its exit code, `not-found` for a missing command, and a stopped executor after a main task. */
const outcomeOf = (exit: FakeExit, main: boolean): RunOutcome => ({
  exitCode: codeOf(exit),
  ...(typeof exit === 'object' && exit.notFound === true ? { reason: 'not-found' as const } : {}),
  ...(main ? { executor: { state: 'stopped', mainTask: null } } : {}),
});

/** The fake processes of one backend: starts them and kills them all when the backend closes. */
class FakeProcesses {
  private readonly running = new Set<AbortController>();
  /** The ports of the runs of each executor: its processes share one network, as a container's do. */
  private readonly nets = new Map<string, Set<FakePorts>>();

  constructor(private readonly run: FakeProcess) {}

  /** Starts the task of `sink` (as the executor's main process, or beside it) and follows it to its end. */
  start(sink: RunSink, main: boolean): void {
    const ac = new AbortController();
    this.running.add(ac);
    const stdin = new FakeStdin(sink.stdin, ac.signal);
    const files = new Map(sink.secrets.files.map((f) => [f.path, f.data]));
    const ports = new FakePorts();
    const io = fakeIO((stream, data) => sink.output(stream, data), files, ac.signal, stdin, ports);
    sink.started({
      process: { fake: true, main },
      kill: async (signal) => {
        if (!ac.signal.aborted) ac.abort(signal);
      },
      // any process of the executor listening on the port answers (this run's own first)
      connect: async (port) =>
        (ports.serves(port) ? ports : (this.serving(sink.executor, port) ?? ports)).connect(sink.task, port),
    });
    const net = this.nets.get(sink.executor) ?? new Set<FakePorts>();
    this.nets.set(sink.executor, net.add(ports));
    void this.follow(sink, io, ac, main)
      .catch(() => sink.end({ exitCode: null, reason: 'lost' }).catch(() => undefined))
      .finally(() => {
        stdin.close();
        ports.close();
        net.delete(ports);
        if (net.size === 0 && this.nets.get(sink.executor) === net) this.nets.delete(sink.executor);
      });
  }

  /** The ports of a run of `executor` that listens on `port`, if any. */
  private serving(executor: string, port: number): FakePorts | undefined {
    return [...(this.nets.get(executor) ?? [])].find((p) => p.serves(port));
  }

  /** Fake processes die with the backend, as processes die with their machine. */
  killAll(): void {
    for (const ac of this.running) ac.abort('KILL');
  }

  private async follow(sink: RunSink, io: FakeIO, ac: AbortController, main: boolean): Promise<void> {
    const exit = await runWithRestarts(this.run, sink, io);
    this.running.delete(ac);
    await sink.end(outcomeOf(exit, main));
  }
}

/** Why `step` must fail before it runs: an injected fault, or the caller's abort. */
const refusalOf = (step: PlanStep, plan: CommitPlan, faults: FaultHook | undefined): AnyError | undefined => {
  const fault = faults?.(step);
  if (fault !== undefined) return fault;
  return plan.signal?.aborted === true ? aborted(step.id, plan.signal.reason) : undefined;
};

/** Runs one step on the machine: unbinding a task stops it, binding one starts it. */
const applyStep = async (step: PlanStep, plan: CommitPlan, m: Machine, processes: FakeProcesses): Promise<void> => {
  if (step.member?.id.kind !== 'task') return;
  if (step.op === 'unbind') {
    await plan.runs.stop(step.id, 'TERM', 0);
    if (m.mainTask === step.id) {
      m.state = 'stopped';
      m.mainTask = null;
    }
  } else if (step.op === 'bind') {
    const main = m.state !== 'running';
    processes.start(plan.runs.open(step.id), main);
    if (main) {
      m.state = 'running';
      m.mainTask = step.id;
    }
  }
};

/** The executor's attributes after the commit: state, main task, root filesystem and mounts. */
const attributesOf = (plan: CommitPlan, m: Machine): Readonly<Record<string, unknown>> => ({
  state: m.state,
  mainTask: m.mainTask,
  rootfs: plan.after.find((x) => x.id.kind === 'image')?.id.key ?? null,
  mounts: plan.after
    .filter((x) => x.id.kind === 'volume')
    .map((x) => ({ volume: x.id.key, at: x.mountpoint, readOnly: x.readOnly })),
});

/** Runs the plan's steps in order; the first that fails ends the commit with the results so far. */
const commitPlan = async (plan: CommitPlan, faults: FaultHook | undefined, processes: FakeProcesses): Promise<DriverCommit> => {
  const m: Machine = {
    state: plan.attributes.state === 'running' ? 'running' : 'stopped',
    mainTask: typeof plan.attributes.mainTask === 'string' ? plan.attributes.mainTask : null,
  };
  const results: StepResult[] = [];
  for (const step of plan.steps) {
    const error = refusalOf(step, plan, faults);
    if (error !== undefined) {
      results.push({ id: step.id, op: step.op, status: 'ERROR', error });
      return E.left({ error, results });
    }
    await applyStep(step, plan, m, processes);
    results.push({ id: step.id, op: step.op, status: 'SUCCESS' });
  }
  return E.right({ results, attributes: attributesOf(plan, m) });
};

/** The memory backend's executor driver: fake processes run by `run`; `faults` fails chosen steps. */
export const executorDriver = (run: FakeProcess, faults?: FaultHook): ExecutorDriver => {
  const processes = new FakeProcesses(run);
  return {
    commit: (plan) => commitPlan(plan, faults, processes),
    async undo() {},
    async destroy() {
      return E.right(undefined);
    },
    async close() {
      processes.killAll();
    },
  };
};
