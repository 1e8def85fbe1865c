/**
 * Runs a service task on the SDK. A task is lessl elements named after it (see elements.ts):
 * its container (executor), its main process `sleep <ttl>` (keeps the container up), command i
 * as `/bin/sh -c <cmd>` exec'd in order, and a volume per directory of resource files, every one
 * with ro metadata `owner` and `lessl.service.task`. Each phase looks at what the stores already
 * hold, so a run interrupted by a crash resumes where it stopped: nothing is started twice (a
 * command whose element exists is waited for, not started again).
 */
import * as E from 'fp-ts/lib/Either.js';
import { runtimeError, taskStatusOf, utf8, type AnyError, type ExecutorOptions, type TaskResult } from '@lessl/core';
import type { Backend } from '@lessl/kit';
import type { CommandRecord, ErrorRecord, ServiceDb, TaskRecord } from './db.js';
import { dirOf, fileDirs, type Policy, type TaskPlan } from './plan.js';
import { fetchSrc, tarOf } from './resources.js';
import type { EgressGuard } from '@lessl/docker';
import { as, elementsOf, listElements, membersOf, readElement, SERVICE, taskElements, volumeId } from './elements.js';

/** What the runner needs. */
export interface RunnerDeps {
  readonly backend: Backend;
  readonly db: ServiceDb;
  readonly policy: Policy;
  /** Where resource `src` fetches may go (the policy's `allowNetworks`). */
  readonly egress: EgressGuard;
  /** The shell commands run with (default `['/bin/sh', '-c']`). */
  readonly shell: readonly string[];
}

const now = (): string => new Date().toISOString();
const errorRecord = (e: AnyError): ErrorRecord => ({ tag: e._tag, message: e.message });
class Failed extends Error {
  constructor(readonly error: AnyError) {
    super(error.message);
  }
}
/** The value of a TaskEither's Right, or throws `Failed` with its Left (caught per phase). */
const ok = async <A>(te: () => Promise<E.Either<AnyError, A>>): Promise<A> => {
  const r = await te();
  if (E.isLeft(r)) throw new Failed(r.left);
  return r.right;
};

/** Runs service tasks; one per task at a time (a per-task chain serializes exec jobs). */
export class Runner {
  private readonly chains = new Map<string, Promise<unknown>>();
  /** Set when the service stops: runs are abandoned as they are (the next start resumes them), not failed. */
  closing = false;
  constructor(private readonly d: RunnerDeps) {}

  /** The shell commands run with (`['/bin/sh', '-c']` unless the server was given another). */
  get shell(): readonly string[] {
    return this.d.shell;
  }

  private get b(): Backend {
    return this.d.backend;
  }

  /** Updates a task record atomically: `f` sees the record as it is when the change is written. */
  update(task: string, f: (r: TaskRecord) => Partial<TaskRecord>): Promise<TaskRecord | undefined> {
    return this.d.db.updateTask(task, (r) => ({ ...r, ...f(r) }));
  }

  /** True while something runs for `task` (see `serialize`). */
  busy(task: string): boolean {
    return this.chains.has(task);
  }

  /** Runs `f` after what runs for `task` already. */
  serialize<A>(task: string, f: () => Promise<A>): Promise<A> {
    const prev = this.chains.get(task) ?? Promise.resolve();
    const p = prev.then(f, f);
    const tail = p.catch(() => undefined);
    this.chains.set(task, tail);
    void tail.then(() => {
      if (this.chains.get(task) === tail) this.chains.delete(task);
    });
    return p;
  }

  /**
   * Makes the task's container (if it is not there yet) and runs its commands: an exec job's
   * `range`, or (null) the commands of its spec. Commands run one at a time in order: any earlier
   * command not ended yet (a job before this one that a restart left) is run or waited for first.
   * Answers the error that stopped it, or null. Commands that fail (exit != 0) are not errors.
   */
  run(
    task: string,
    range: { readonly from: number; readonly count: number } | null,
    signal: AbortSignal,
  ): Promise<ErrorRecord | null> {
    return this.serialize(task, async () => {
      try {
        const rec = this.d.db.tasks.get(task);
        if (rec === undefined || rec.deleted) return null;
        const span = spanOf(rec, range);
        // an exec whose commands were all skipped (an earlier one failed) has nothing to start
        if (range !== null && !rec.commands.slice(span.from, span.to).some(unended)) return null;
        if ((await readElement(this.b, 'executor', elementsOf(task).executor)) === undefined) await this.start(rec, signal);
        else if (rec.started === null) await this.update(task, () => startedFields(rec.plan));
        await this.commands(task, span, signal);
        if (!this.closing) await this.finish(task);
        return null;
      } catch (err) {
        return this.closing ? null : this.fail(task, err, signal);
      }
    });
  }

  /** The end of a one-shot task's run: its container goes, its state is the commands'. */
  private async finish(task: string): Promise<void> {
    const after = this.d.db.tasks.get(task);
    if (after === undefined || after.plan.daemon || after.deleted) return;
    // a command that ran as the main process took its container with it: only records are left,
    // removed next on this task's chain, after the job ended; a keep-alive container goes first
    if ((await readElement(this.b, 'task', elementsOf(task).main)) === undefined)
      void this.serialize(task, () => this.teardown(task, false));
    else await this.teardown(task, false);
    await this.update(task, (r) => ({ state: finalState(r.commands), ended: now() }));
  }

  /** A failed run: its container goes, the task is failed (or cancelled) and its pending commands skipped. */
  private async fail(task: string, err: unknown, signal: AbortSignal): Promise<ErrorRecord> {
    const e = err instanceof Failed ? err.error : runtimeError(task, 'the task failed', err);
    await this.teardown(task, false);
    // what is left (records of commands that ran) goes at the ttl, counted from now if it never started
    // the failure stops the rest: commands not started yet are skipped (later execs' too)
    await this.update(task, (r) =>
      r.deleted
        ? {}
        : {
            state: signal.aborted ? 'cancelled' : 'failed',
            ended: now(),
            error: errorRecord(e),
            expires: r.expires ?? new Date(Date.now() + r.plan.ttl * 1000).toISOString(),
            commands: skipPending(r.commands, 0),
          },
    );
    return errorRecord(e);
  }

  /** Phase 1: resources (fetched, packed into per-directory volumes), the caller's volumes, the container. */
  private async start(rec: TaskRecord, signal: AbortSignal): Promise<void> {
    const { plan, owner, id } = rec;
    // the owner's own reads: the authorizer answers whether the image and volumes are theirs (or public)
    if ((await readElement(this.b, 'image', plan.image, as(owner))) === undefined)
      throw new Failed(runtimeError(plan.image, `unknown image ${plan.image}`));
    const volumes = [...(await this.resourceVolumes(rec, signal)), ...(await this.ownVolumes(rec))];
    // a one-shot task of one command runs it as the container's process (no exec); otherwise a
    // keep-alive main process holds the container while the commands are exec'd in turn
    const direct = !plan.daemon && rec.commands.length === 1;
    const main = await this.mainTask(rec, direct);
    if (direct) await this.giveInput(rec, 0, main);
    await this.compose(rec, volumes, main, signal);
    if (direct) await this.inputTaken(rec, 0);
    await this.update(id, (cur) => ({
      ...startedFields(plan),
      ...(direct ? { commands: replace(cur.commands, 0, { ...commandAt(cur, 0), state: 'running', startedAt: now() }) } : {}),
    }));
  }

  /** The per-directory volumes of the task's resource files (made unless a previous run did). */
  private async resourceVolumes(rec: TaskRecord, signal: AbortSignal): Promise<Mount[]> {
    const el = elementsOf(rec.id);
    const out: Mount[] = [];
    for (const [i, dir] of fileDirs(rec.plan.files).entries()) {
      const vid = el.volume(i);
      if ((await readElement(this.b, 'volume', vid)) === undefined) {
        const files: { name: string; data: Buffer }[] = [];
        for (const f of rec.plan.files.filter((x) => dirOf(x.path) === dir)) {
          const data =
            f.src === undefined
              ? Buffer.from(f.data ?? '', 'base64')
              : await ok(() => fetchSrc(f.src ?? '', this.d.policy.fetch, this.d.egress, signal));
          files.push({ name: f.path.slice(f.path.lastIndexOf('/') + 1), data });
        }
        await ok(this.b.stores.volume.create({ id: vid, data: await tarOf(files), ro: marks(rec) }, SERVICE));
      }
      out.push({ id: vid, mountpoint: dir, readOnly: false });
    }
    return out;
  }

  /** The caller's own volumes the task mounts (the authorizer answers whether they are the owner's). */
  private async ownVolumes(rec: TaskRecord): Promise<Mount[]> {
    const out: Mount[] = [];
    for (const m of rec.plan.mounts) {
      const vid = volumeId(m.volume);
      if ((await readElement(this.b, 'volume', vid, as(rec.owner))) === undefined)
        throw new Failed(runtimeError(vid, `unknown volume ${m.volume}`));
      out.push({ id: vid, mountpoint: m.mountpoint, readOnly: false });
    }
    return out;
  }

  /** The container's main task: the one command of a direct task, else a keep-alive `sleep` (made unless a previous run did). */
  private async mainTask(rec: TaskRecord, direct: boolean): Promise<string> {
    const main = mainElement(rec);
    if ((await readElement(this.b, 'task', main)) === undefined) {
      const ports = rec.plan.ports ?? [];
      const base = direct ? this.commandSpec(rec, 0) : { cmd: ['sleep', String(rec.plan.ttl)], daemon: true };
      // the ports the task serves are declared on its main task: a connection to it reaches any process of the container
      const spec = ports.length === 0 ? base : { ...base, ports: [...ports] };
      await ok(this.b.stores.task.create({ id: main, spec, ro: marks(rec) }, SERVICE));
    }
    return main;
  }

  /** Composes the container: the image, the volumes, the main task bound; one commit. */
  private async compose(rec: TaskRecord, volumes: readonly Mount[], main: string, signal: AbortSignal): Promise<void> {
    const c = this.b.composer;
    const p = SERVICE;
    let h = await ok(c.handle(elementsOf(rec.id).executor, executorOptions(rec.plan), p));
    h = await ok(c.join(h, rec.plan.image, undefined, p));
    for (const v of volumes) h = await ok(c.join(h, v.id, { mountpoint: v.mountpoint, readOnly: v.readOnly }, p));
    h = await ok(c.bind(await ok(c.join(h, main, undefined, p)), main, p));
    const r = await ok(c.commit(h, { ...p, signal }));
    if (!r.committed) throw new Failed(r.error);
  }

  /**
   * Phase 2: the commands of `span`, in order, each exec'd and waited for. A command's result and,
   * when it failed, the skipping of every command not started yet are one write, so the first
   * failure stops the rest even across a crash. A service that is closing starts nothing more.
   */
  private async commands(task: string, span: { from: number; to: number }, signal: AbortSignal): Promise<void> {
    for (let i = span.from; i < span.to; i++) {
      const cur = this.d.db.tasks.get(task);
      const cmd = cur?.commands[i];
      if (cur === undefined || cmd === undefined || cur.deleted || this.closing) return;
      if (!unended(cmd)) continue;
      const res = await this.command(cur, i, signal);
      await this.update(task, (r) => ({ commands: ended(r.commands, i, res) }));
    }
  }

  /** The lessl task spec of command i: the shell, env and pwd (the task's, then the command's own), limits. */
  private commandSpec(rec: TaskRecord, i: number): Record<string, unknown> {
    const cmd = commandAt(rec, i);
    const env = { ...rec.plan.env, ...(cmd.env ?? {}) };
    const pwd = cmd.pwd ?? rec.plan.pwd;
    return {
      cmd: [...this.d.shell, cmd.cmd],
      ...(Object.keys(env).length > 0 ? { env } : {}),
      ...(pwd === null ? {} : { pwd }),
      limits: { deadlineMs: rec.plan.limits.timeout * 1000, outputBytes: rec.plan.limits.output },
      ...(i === 0 && rec.plan.stdin !== undefined ? { interaction: { stdin: true } } : {}),
    };
  }

  /** Hands the task's input to command `i` (the first one takes it), before the commit that starts it. */
  private async giveInput(rec: TaskRecord, i: number, id: string): Promise<void> {
    if (i === 0 && rec.plan.stdin !== undefined) await ok(this.b.tasks.input(id, Buffer.from(rec.plan.stdin, 'base64'), SERVICE));
  }

  /** Once command `i` has started with the task's input, the record keeps it no longer. */
  private async inputTaken(rec: TaskRecord, i: number): Promise<void> {
    if (i !== 0 || rec.plan.stdin === undefined) return;
    await this.update(rec.id, (r) => {
      const { stdin: _taken, ...plan } = r.plan;
      return { plan };
    });
  }

  /** One command: create its task element (unless a previous run did), bind it into the container, wait. */
  private async command(rec: TaskRecord, i: number, signal: AbortSignal): Promise<TaskResult> {
    const id = elementsOf(rec.id).command(i);
    const made =
      (await readElement(this.b, 'task', id)) ??
      (await ok(this.b.stores.task.create({ id, spec: this.commandSpec(rec, i), ro: marks(rec) }, SERVICE)));
    if (taskStatusOf(made.attributes).state === 'created') {
      await this.update(rec.id, (r) => ({
        commands: replace(r.commands, i, { ...commandAt(r, i), state: 'running', startedAt: now() }),
      }));
      await this.giveInput(rec, i, id);
      await this.bindCommand(rec.id, id, signal);
      await this.inputTaken(rec, i);
    }
    const res = await this.b.tasks.wait(id, { ...SERVICE, signal })();
    if (E.isRight(res)) return res.right;
    if (res.left._tag === 'Aborted') {
      await this.b.tasks.kill(id, { ...SERVICE, signal: 'KILL' })();
      return ok(this.b.tasks.wait(id, SERVICE));
    }
    throw new Failed(res.left);
  }

  /** Binds command `id` into the task's running container (a few tries: a concurrent commit may win one). */
  private async bindCommand(task: string, id: string, signal: AbortSignal): Promise<void> {
    const c = this.b.composer;
    const p = SERVICE;
    for (let attempt = 0; ; attempt++) {
      const h = await ok(c.handle(elementsOf(task).executor, undefined, p));
      const joined = h.members.some((m) => m.id.key === id) ? h : await ok(c.join(h, id, undefined, p));
      const r = await ok(c.commit(await ok(c.bind(joined, id, p)), { ...p, signal }));
      if (r.committed) return;
      if (r.error._tag !== 'Conflict' || attempt >= 5) throw new Failed(r.error);
    }
  }

  /** True when any lessl element of the task is left. */
  async hasElements(task: string): Promise<boolean> {
    const one = { store: 'local', namePrefix: `${task}.`, limit: 1 };
    return (
      (await readElement(this.b, 'executor', elementsOf(task).executor)) !== undefined ||
      (await listElements(this.b, 'volume', one)).length > 0 ||
      (await listElements(this.b, 'task', one)).length > 0
    );
  }

  /** Kills the task's running processes (its commands are waited for by its run, which then stops). */
  async kill(task: string): Promise<void> {
    for (const m of await membersOf(this.b, elementsOf(task).executor))
      if (m.kind === 'task') await this.b.tasks.kill(m.key, { ...SERVICE, signal: 'KILL' })();
  }

  /**
   * Removes the container (the backend's `teardown`, shared with `run()`), its main task and
   * per-task volumes; with `results`, also the command tasks (and their output). Idempotent;
   * never throws.
   */
  async teardown(task: string, results: boolean): Promise<void> {
    const el = elementsOf(task);
    const b = this.b;
    try {
      await b.teardown(el.executor, SERVICE);
      // the task's own elements, by name (a prefix scan of the sorted index), checked by their ro mark
      for (const v of await taskElements(b, 'volume', task)) await b.stores.volume.delete(v.id.key, SERVICE)();
      for (const t of await taskElements(b, 'task', task))
        if (results || t.id.key === el.main) await b.stores.task.delete(t.id.key, SERVICE)();
    } catch {
      // best effort: the reaper comes back to what is left
    }
  }
}

/** A volume as the container mounts it. */
interface Mount {
  readonly id: string;
  readonly mountpoint: string;
  readonly readOnly: boolean;
}

/** The ro metadata of a task's elements: its owner, and the task they belong to. */
const marks = (rec: TaskRecord): Record<string, Uint8Array> => utf8({ owner: rec.owner, 'lessl.service.task': rec.id });

/** Command i of a task record (one the record has: the plan made it). */
const commandAt = (rec: Pick<TaskRecord, 'commands' | 'id'>, i: number): CommandRecord => {
  const c = rec.commands[i];
  if (c === undefined) throw new Failed(runtimeError(rec.id, `the task has no command ${i}`));
  return c;
};

/**
 * The element of a task's container's main process: its one command for a one-shot task of one
 * command (run as the container's process), else the keep-alive `<task>.main`.
 */
export const mainElement = (rec: Pick<TaskRecord, 'id' | 'plan' | 'commands'>): string => {
  const el = elementsOf(rec.id);
  return !rec.plan.daemon && rec.commands.length === 1 ? el.command(0) : el.main;
};

/** The executor options of a plan's limits and network (tasks and functions alike). */
export const executorOptions = (plan: Pick<TaskPlan, 'network' | 'limits'>): ExecutorOptions => ({
  network: plan.network,
  memoryBytes: plan.limits.memory,
  cpus: plan.limits.cpus,
  pids: plan.limits.pids,
});

const startedFields = (plan: TaskPlan): Partial<TaskRecord> => {
  const t = Date.now();
  return { started: new Date(t).toISOString(), expires: new Date(t + plan.ttl * 1000).toISOString(), state: 'running' };
};

const replace = <A>(a: readonly A[], i: number, v: A): A[] => a.map((x, j) => (j === i ? v : x));

/** A command that has not ended (not started yet, or running). */
const unended = (c: CommandRecord): boolean => c.state === 'pending' || c.state === 'running';

/** The commands a run covers: from the first not ended (in order, whoever's they are) to the end of its own. */
const spanOf = (
  rec: TaskRecord,
  range: { readonly from: number; readonly count: number } | null,
): { from: number; to: number } => {
  const first = rec.commands.findIndex(unended);
  const from = range?.from ?? 0;
  return { from: first < 0 ? from : Math.min(first, from), to: range === null ? rec.plan.cmd.length : range.from + range.count };
};

/** Commands not started yet from `from` on, skipped. */
const skipPending = (cmds: readonly CommandRecord[], from: number): CommandRecord[] =>
  cmds.map((c, i) => (i >= from && c.state === 'pending' ? { ...c, state: 'skipped' as const } : c));

/** Command i's result recorded; when it failed, every command not started yet skipped (the first failure stops the rest). */
const ended = (cmds: readonly CommandRecord[], i: number, res: TaskResult): CommandRecord[] => {
  const next = cmds.map((c, j) => (j === i ? { ...c, ...commandResult(res) } : c));
  return res.exitCode === 0 ? next : skipPending(next, i + 1);
};

const commandResult = (r: TaskResult): Partial<CommandRecord> => ({
  exitCode: r.exitCode,
  state: r.state,
  reason: r.reason,
  outputBytes: r.stdout.byteLength + r.stderr.byteLength,
  truncated: r.truncated,
  startedAt: r.startedAt,
  endedAt: r.endedAt,
});

/** The state a one-shot task ends in: killed when a command was, otherwise exited. */
const finalState = (cmds: readonly CommandRecord[]): TaskRecord['state'] =>
  cmds.some((c) => c.state === 'killed') ? 'killed' : cmds.some((c) => c.state === 'lost') ? 'lost' : 'exited';
