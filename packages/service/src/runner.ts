/**
 * Runs a service task on the SDK. A task is lessl elements named after it:
 *   executor://local/<task>          the container
 *   task://local/<task>.main         its main process, `sleep <ttl>` (keeps the container up)
 *   task://local/<task>.c<i>         command i, `/bin/sh -c <cmd>`, exec'd in order
 *   volume://local/<task>.r<i>       the resource files of one directory, mounted there
 * every one with ro metadata `owner` and `lessl.service.task`. Each phase looks at what the
 * registry already holds, so a run interrupted by a crash resumes where it stopped: nothing is
 * started twice (a command whose element exists is waited for, not started again).
 */
import * as E from 'fp-ts/lib/Either.js';
import { fromUtf8, runtimeError, taskStatusOf, utf8, type AnyError, type ExecutorOptions, type TaskResult } from '@lessl/core';
import type { Backend } from '@lessl/level';
import type { CommandRecord, ErrorRecord, ServiceDb, TaskRecord } from './db.js';
import { dirOf, fileDirs, type Policy, type TaskPlan } from './plan.js';
import { fetchSrc, tarOf } from './resources.js';
import type { EgressGuard } from '@lessl/docker';

/** The lessl element IDs of a service task. */
export const elementsOf = (task: string) => ({
  executor: `executor://local/${task}`,
  main: `task://local/${task}.main`,
  command: (i: number) => `task://local/${task}.c${i}`,
  volume: (i: number) => `volume://local/${task}.r${i}`,
});

/** The service task an element belongs to (from its name), or undefined. */
export const serviceTaskOf = (elementId: string): string | undefined =>
  /^[a-z]+:\/\/local\/(t_[a-z0-9]+)(\.|$)/.exec(elementId)?.[1];

/** The principal the service itself uses (the authorizer lets it do everything). */
export const SYSTEM = 'lessl-service';

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
        if (this.b.registry.get(elementsOf(task).executor) === undefined) await this.start(rec, signal);
        else if (rec.started === null) await this.update(task, () => startedFields(rec.plan));
        await this.commands(task, span, signal);
        if (this.closing) return null;
        const after = this.d.db.tasks.get(task);
        if (after !== undefined && !after.plan.daemon && !after.deleted) {
          // a command that ran as the main process took its container with it: only records are left,
          // removed next on this task's chain, after the job ended; a keep-alive container goes first
          if (this.b.registry.get(elementsOf(task).main) === undefined)
            void this.serialize(task, () => this.teardown(task, false));
          else await this.teardown(task, false);
          await this.update(task, (r) => ({ state: finalState(r.commands), ended: now() }));
        }
        return null;
      } catch (err) {
        if (this.closing) return null;
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
    });
  }

  /** Phase 1: resources (fetched, packed into per-directory volumes), the caller's volumes, the container. */
  private async start(rec: TaskRecord, signal: AbortSignal): Promise<void> {
    const { plan, owner, id } = rec;
    const el = elementsOf(id);
    const ro = utf8({ owner, 'lessl.service.task': id });
    const image = this.b.registry.get(plan.image);
    if (image === undefined || !visibleTo(fromUtf8(image.ro).owner, owner))
      throw new Failed(runtimeError(plan.image, `unknown image ${plan.image}`));
    const volumes: { id: string; mountpoint: string; readOnly: boolean }[] = [];
    for (const [i, dir] of fileDirs(plan.files).entries()) {
      const vid = el.volume(i);
      if (this.b.registry.get(vid) === undefined) {
        const files: { name: string; data: Buffer }[] = [];
        for (const f of plan.files.filter((x) => dirOf(x.path) === dir)) {
          const data =
            f.src === undefined
              ? Buffer.from(f.data ?? '', 'base64')
              : await ok(() => fetchSrc(f.src ?? '', this.d.policy.fetch, this.d.egress, signal));
          files.push({ name: f.path.slice(f.path.lastIndexOf('/') + 1), data });
        }
        await ok(this.b.stores.volume.create({ id: vid, data: await tarOf(files), ro }, { principal: SYSTEM }));
      }
      volumes.push({ id: vid, mountpoint: dir, readOnly: false });
    }
    for (const m of plan.mounts) {
      const vid = `volume://local/${m.volume}`;
      const v = this.b.registry.get(vid);
      if (v === undefined || fromUtf8(v.ro).owner !== owner) throw new Failed(runtimeError(vid, `unknown volume ${m.volume}`));
      volumes.push({ id: vid, mountpoint: m.mountpoint, readOnly: false });
    }
    // a one-shot task of one command runs it as the container's process (no exec); otherwise a
    // keep-alive main process holds the container while the commands are exec'd in turn
    const direct = !plan.daemon && rec.commands.length === 1;
    const main = direct ? el.command(0) : el.main;
    if (this.b.registry.get(main) === undefined) {
      const spec = direct ? this.commandSpec(rec, 0) : { cmd: ['sleep', String(plan.ttl)], daemon: true };
      await ok(this.b.stores.task.create({ id: main, spec, ro }, { principal: SYSTEM }));
    }
    const c = this.b.composer;
    const p = { principal: SYSTEM };
    let h = await ok(c.handle(el.executor, executorOptions(plan), p));
    h = await ok(c.join(h, plan.image, undefined, p));
    for (const v of volumes) h = await ok(c.join(h, v.id, { mountpoint: v.mountpoint, readOnly: v.readOnly }, p));
    h = await ok(c.bind(await ok(c.join(h, main, undefined, p)), main, p));
    const r = await ok(c.commit(h, { ...p, signal }));
    if (!r.committed) throw new Failed(r.error);
    await this.update(id, (cur) => ({
      ...startedFields(plan),
      ...(direct
        ? { commands: replace(cur.commands, 0, { ...(cur.commands[0] as CommandRecord), state: 'running', startedAt: now() }) }
        : {}),
    }));
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
    const cmd = rec.commands[i] as CommandRecord;
    const env = { ...rec.plan.env, ...(cmd.env ?? {}) };
    const pwd = cmd.pwd ?? rec.plan.pwd;
    return {
      cmd: [...this.d.shell, cmd.cmd],
      ...(Object.keys(env).length > 0 ? { env } : {}),
      ...(pwd === null ? {} : { pwd }),
      limits: { deadlineMs: rec.plan.limits.timeout * 1000, outputBytes: rec.plan.limits.output },
    };
  }

  /** One command: create its task element (unless a previous run did), bind it into the container, wait. */
  private async command(rec: TaskRecord, i: number, signal: AbortSignal): Promise<TaskResult> {
    const el = elementsOf(rec.id);
    const id = el.command(i);
    const p = { principal: SYSTEM };
    if (this.b.registry.get(id) === undefined)
      await ok(
        this.b.stores.task.create(
          { id, spec: this.commandSpec(rec, i), ro: utf8({ owner: rec.owner, 'lessl.service.task': rec.id }) },
          p,
        ),
      );
    const st = taskStatusOf(this.b.registry.get(id)?.attributes ?? {});
    if (st.state === 'created') {
      await this.update(rec.id, (r) => ({
        commands: replace(r.commands, i, { ...(r.commands[i] as CommandRecord), state: 'running', startedAt: now() }),
      }));
      for (let attempt = 0; ; attempt++) {
        const h = await ok(this.b.composer.handle(el.executor, undefined, p));
        const joined = h.members.some((m) => m.id.key === id) ? h : await ok(this.b.composer.join(h, id, undefined, p));
        const r = await ok(this.b.composer.commit(await ok(this.b.composer.bind(joined, id, p)), { ...p, signal }));
        if (r.committed) break;
        if (r.error._tag !== 'Conflict' || attempt >= 5) throw new Failed(r.error);
      }
    }
    const res = await this.b.tasks.wait(id, { ...p, signal })();
    if (E.isRight(res)) return res.right;
    if (res.left._tag === 'Aborted') {
      await this.b.tasks.kill(id, { ...p, signal: 'KILL' })();
      return ok(this.b.tasks.wait(id, p));
    }
    throw new Failed(res.left);
  }

  /** True when any lessl element of the task is left. */
  hasElements(task: string): boolean {
    const r = this.b.registry;
    return (
      r.get(elementsOf(task).executor) !== undefined ||
      r.scan(`volume://local/${task}.`, 1).length > 0 ||
      r.scan(`task://local/${task}.`, 1).length > 0
    );
  }

  /** Kills the task's running processes (its commands are waited for by its run, which then stops). */
  async kill(task: string): Promise<void> {
    const comp = this.b.registry.composition(elementsOf(task).executor);
    for (const m of comp?.members ?? [])
      if (m.id.startsWith('task://')) await this.b.tasks.kill(m.id, { principal: SYSTEM, signal: 'KILL' })();
  }

  /**
   * Removes the container, its main task and per-task volumes; with `results`, also the command
   * tasks (and their output). Idempotent; never throws.
   */
  async teardown(task: string, results: boolean): Promise<void> {
    const el = elementsOf(task);
    const p = { principal: SYSTEM };
    const b = this.b;
    try {
      const x = b.registry.get(el.executor);
      if (x !== undefined) {
        const comp = b.registry.composition(el.executor);
        for (const m of comp?.members ?? []) if (m.id.startsWith('task://')) await b.tasks.kill(m.id, { ...p, signal: 'KILL' })();
        for (let attempt = 0; attempt < 5; attempt++) {
          const h = await b.composer.handle(el.executor, undefined, p)();
          if (E.isLeft(h)) break;
          let cur = h.right;
          for (const m of cur.members) {
            const l = await b.composer.leave(cur, m.id, p)();
            if (E.isRight(l)) cur = l.right;
          }
          const r = await b.composer.commit(cur, p)();
          if (E.isRight(r) && r.right.committed) break;
        }
        await b.stores.executor.delete(el.executor, p)();
      }
      // the task's own elements, by name (a prefix scan of the sorted index), checked by their ro mark
      const mine = [...b.registry.scan(`volume://local/${task}.`), ...b.registry.scan(`task://local/${task}.`)].filter(
        (e) => fromUtf8(e.ro)['lessl.service.task'] === task,
      );
      for (const e of mine) {
        if (e.id.kind === 'volume') await b.stores.volume.delete(e.id.key, p)();
        else if (e.id.kind === 'task' && (results || e.id.key === el.main)) await b.stores.task.delete(e.id.key, p)();
      }
    } catch {
      // best effort: the reaper comes back to what is left
    }
  }
}

/** True when an element owned by `owner` (or by nobody: public) is visible to `user`. */
export const visibleTo = (owner: string | undefined, user: string): boolean => owner === undefined || owner === user;

const executorOptions = (plan: TaskPlan): ExecutorOptions => ({
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
  const next = replace(cmds, i, { ...(cmds[i] as CommandRecord), ...commandResult(res) });
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
