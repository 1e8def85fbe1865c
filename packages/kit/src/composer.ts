/**
 * The generic composer: immutable handles, validation at each verb, and a commit that diffs
 * the handle against the executor's record, lets the executor driver apply the steps (it rolls
 * back on failure), then persists the new composition with its events in one batch.
 */
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import { randomUUID } from 'node:crypto';
import * as t from 'io-ts';
import {
  aborted,
  decodeCallContext,
  describeId,
  logError,
  conflict,
  decodeExecutorOptions,
  decodeOptions,
  JoinOptionsProps,
  FINAL_STATES,
  inUse,
  taskStatusOf,
  taskSpecOf,
  isObject,
  keyOf,
  keyPrefix,
  invalidEntry,
  invalidLocation,
  jsonData,
  notFound,
  permissionDenied,
  runtimeError,
  toId,
  unknownLocation,
  type AnyError,
  type CallContext,
  type CommitResult,
  type Composer,
  type CompositionError,
  type Element,
  type ElementId,
  type ExecutorOptions,
  type Handle,
  type InvalidEntry,
  type IdLike,
  type JoinOptions,
  type Member,
  type MemberState,
  type TaskSpec,
  type TaskStatus,
} from '@lessl/core';
import {
  idOfKey,
  publicStepResult,
  type CommitPlan,
  type DriverCommit,
  type DriverStepResult,
  type PlanStep,
  type RunOpener,
  type Secrets,
} from './drivers.js';
import type { ActiveRun } from './runtime.js';
import type { CompositionRecord, EventDraft, MemberRecord } from './records.js';
import { resolveSecrets, unsupportedField } from './spec.js';
import { guard, principalOf, route, type Wiring } from './wiring.js';

const toRecord = (m: Member): MemberRecord => ({
  id: m.id.key,
  ...(m.mountpoint === undefined ? {} : { mountpoint: m.mountpoint }),
  readOnly: m.readOnly,
  state: m.state,
});

/** The spec of a task element (validated when it was created). */
/** A member task's spec (a task without one runs `true`). */
const specOf = (el: Element | undefined): TaskSpec => taskSpecOf(el?.attributes ?? {}) ?? { cmd: ['true'] };

/** Converts a persisted member back into a `Member`. */
export const fromRecord = (m: MemberRecord): Member => {
  const id = toId(m.id);
  if (E.isLeft(id)) throw new Error(`corrupt composition member ${m.id}`);
  return {
    id: id.right,
    ...(m.mountpoint === undefined ? {} : { mountpoint: m.mountpoint }),
    readOnly: m.readOnly,
    state: m.state,
  };
};

const validMountpoint = (p: unknown): p is string =>
  typeof p === 'string' &&
  p.startsWith('/') &&
  p !== '/' &&
  !p.split('/').includes('..') &&
  !p.includes('\0') &&
  !p.includes(':');

/**
 * Executor options from a caller, copied into JSON data (what a commit persists): anything else
 * (a BigInt, a cycle, a throwing getter, a Proxy) is `InvalidEntry` here, before it can reach the
 * registry. Their fields are decoded exactly by the composer (`options`), with the backend's codec.
 */
const readOptions = (id: string, o: unknown): E.Either<InvalidEntry, ExecutorOptions> => {
  if (o === undefined) return E.right({});
  const c = jsonData(o);
  if (E.isLeft(c)) return E.left(invalidEntry(`invalid executor options: ${c.left}`, id, ['options']));
  return E.right(c.right as ExecutorOptions);
};

const badHandle = (why: string, id = ''): E.Either<InvalidEntry, never> =>
  E.left(invalidEntry(`not a composition handle: ${why}`, id, ['handle']));

/** A member of a handle from a caller, checked, with its ID parsed afresh. */
const readMember = (u: unknown, i: number, xid: string): E.Either<InvalidEntry, Member> => {
  if (!isObject(u)) return badHandle(`member ${i} is not an object`, xid);
  const m = u;
  const id = toId(m.id);
  if (E.isLeft(id) || id.right.kind === 'executor') return badHandle(`member ${i} has no valid element ID`, xid);
  if (typeof m.readOnly !== 'boolean') return badHandle(`member ${i}: readOnly must be a boolean`, xid);
  if (m.state !== 'bound' && m.state !== 'unbound') return badHandle(`member ${i}: state must be bound or unbound`, xid);
  const volume = id.right.kind === 'volume';
  const mountpoint = m.mountpoint;
  if (volume ? !validMountpoint(mountpoint) : mountpoint !== undefined)
    return badHandle(`member ${i}: ${volume ? 'a volume needs a valid mountpoint' : 'only volumes take a mountpoint'}`, xid);
  return E.right({
    id: id.right,
    ...(volume && typeof mountpoint === 'string' ? { mountpoint } : {}),
    readOnly: m.readOnly,
    state: m.state,
  });
};

/**
 * A handle from a caller (it may be forged, hostile or stale), read once into a fresh, checked
 * handle: every ID parsed, members well formed, options JSON data. Never throws.
 */
const readHandle = (u: unknown): E.Either<InvalidEntry, Handle> => {
  const c = jsonData(u);
  if (E.isLeft(c)) return badHandle(c.left);
  const h: unknown = c.right;
  if (!isObject(h)) return badHandle('not an object');
  const x = toId(h.executor);
  if (E.isLeft(x) || x.right.kind !== 'executor') return badHandle('no valid executor ID');
  const xid = x.right.key;
  const revision = h.revision;
  if (typeof revision !== 'number' || !Number.isSafeInteger(revision) || revision < 0)
    return badHandle('revision must be a non-negative integer', xid);
  const options = readOptions(xid, h.options);
  if (E.isLeft(options)) return options;
  if (!Array.isArray(h.members)) return badHandle('members must be an array', xid);
  const members: Member[] = [];
  for (const [i, u] of h.members.entries()) {
    const m = readMember(u, i, xid);
    if (E.isLeft(m)) return m;
    if (members.some((o) => o.id.key === m.right.id.key)) return badHandle(`${m.right.id.key} is a member twice`, xid);
    members.push(m.right);
  }
  return E.right({ executor: x.right, revision, options: options.right, members });
};

/** The member `join` adds to a handle, or why it cannot (all from the handle and the arguments). */
const newMember = (h: Handle, eid: ElementId, opts: JoinOptions | undefined): E.Either<InvalidEntry, Member> => {
  if (eid.kind === 'image' && h.members.some((m) => m.id.kind === 'image'))
    return E.left(invalidEntry('an image is already joined as the root filesystem', eid.key, ['id']));
  const readOnly = opts?.readOnly === true;
  if (eid.kind !== 'volume') {
    if (opts?.mountpoint !== undefined) return E.left(invalidEntry(`only volumes take a mountpoint`, eid.key, ['mountpoint']));
    return E.right({ id: eid, readOnly, state: 'unbound' });
  }
  if (!validMountpoint(opts?.mountpoint))
    return E.left(invalidEntry('a volume needs an absolute mountpoint other than / (no "..")', eid.key, ['mountpoint']));
  const mp = opts.mountpoint.replace(/\/+$/, '');
  if (h.members.some((m) => m.mountpoint === mp))
    return E.left(invalidEntry(`mountpoint ${mp} is already used`, eid.key, ['mountpoint']));
  return E.right({ id: eid, mountpoint: mp, readOnly, state: 'unbound' });
};

const notJoined = (key: string, h: Handle): CompositionError => ({
  ...notFound(key),
  message: `not found: ${key} is not joined to ${h.executor.key}`,
});

/** The handle of a call that works on the handle alone, read, after its context is checked. */
const handleAndContext = (h: unknown, id: unknown, ctx: unknown): E.Either<InvalidEntry, Handle> => {
  const handle = readHandle(h);
  if (E.isLeft(handle)) return handle;
  const context = decodeCallContext(describeId(id), ctx);
  return E.isLeft(context) ? context : handle;
};

/** The executor key of a handle for messages; never throws. */
const executorKey = (h: unknown): string => {
  try {
    return isObject(h) ? describeId(h.executor) : '';
  } catch {
    return '';
  }
};

/** The composer over a wiring. */
export class GenericComposer implements Composer {
  constructor(private readonly w: Wiring) {}

  /** Decodes executor options exactly, the backend's own (`backend`) with the driver's codec. */
  private options(id: string, u: unknown): E.Either<CompositionError, ExecutorOptions> {
    return decodeExecutorOptions(id, u, this.w.executor.backendOptions ?? t.type({}));
  }

  /** Input shape (options, ID), location, authorization (`read`, whether or not the executor exists), then the snapshot. */
  handle(executor?: IdLike, options?: ExecutorOptions, rawCtx?: CallContext): TaskEither<CompositionError, Handle> {
    return guard<CompositionError, Handle>(describeId(executor), async () => {
      const copied = readOptions(describeId(executor), options);
      if (E.isLeft(copied)) return copied;
      const decoded = this.options(describeId(executor), copied.right);
      if (E.isLeft(decoded)) return decoded;
      const context = decodeCallContext(describeId(executor), rawCtx);
      if (E.isLeft(context)) return context;
      const ctx = context.right;
      let raw = executor;
      if (raw === undefined) {
        const first = [...this.w.stores.values()].find((s) => s.kind === 'executor');
        if (first === undefined) return E.left(unknownLocation(keyPrefix('executor'), keyPrefix('executor')));
        raw = keyOf('executor', first.name, `x-${randomUUID().slice(0, 12)}`);
      }
      const p = toId(raw);
      if (E.isLeft(p)) return p;
      const r = route(this.w, 'executor', p.right);
      if (E.isLeft(r)) return r;
      const { id } = r.right;
      const el = this.w.registry.get(id.key);
      if (!this.w.authorize(principalOf(ctx), 'read', id.key, el))
        return E.left(permissionDenied(id.key, principalOf(ctx), 'read'));
      if (el === undefined) return E.right({ executor: id, revision: 0, options: decoded.right, members: [] });
      const comp = this.w.registry.composition(id.key);
      return E.right({
        executor: id,
        revision: el.revision,
        options: comp?.options ?? {},
        members: (comp?.members ?? []).map(fromRecord),
      });
    });
  }

  /**
   * Input shape (handle, ID, options, what the handle allows), location, authorization (`read`
   * on the element, whether or not it exists), then existence.
   */
  join(h: Handle, id: IdLike, opts?: JoinOptions, rawCtx?: CallContext): TaskEither<CompositionError, Handle> {
    return guard<CompositionError, Handle>(describeId(id), async () => {
      const hh = readHandle(h);
      if (E.isLeft(hh)) return hh;
      const handle = hh.right;
      const p = toId(id);
      if (E.isLeft(p)) return p;
      const eid = p.right;
      if (eid.kind === 'executor') return E.left(invalidEntry('an executor cannot join a composition', eid.key, ['id']));
      const o = decodeOptions(JoinOptionsProps, opts, 'join options', { id: eid.key }); // each read once
      if (E.isLeft(o)) return o;
      const context = decodeCallContext(eid.key, rawCtx);
      if (E.isLeft(context)) return context;
      const ctx = context.right;
      const joined = handle.members.some((m) => m.id.key === eid.key);
      const member = joined ? undefined : newMember(handle, eid, o.right);
      if (member !== undefined && E.isLeft(member)) return member;
      const r = route(this.w, eid.kind, eid);
      if (E.isLeft(r)) return r;
      const el = this.w.registry.get(eid.key);
      if (!this.w.authorize(principalOf(ctx), 'read', eid.key, el))
        return E.left(permissionDenied(eid.key, principalOf(ctx), 'read'));
      if (el === undefined) return E.left(notFound(eid.key));
      if (member === undefined) return E.right(h); // idempotent: the handle it was given
      return E.right({ ...handle, members: [...handle.members, member.right] });
    });
  }

  /** Bind/unbind work on the handle alone (no registry, no authorizer: `commit` asks). */
  private setState(h: Handle, id: IdLike | undefined, state: MemberState, ctx: unknown): TaskEither<CompositionError, Handle> {
    return guard<CompositionError, Handle>(describeId(id), async () => {
      const read = handleAndContext(h, id, ctx);
      if (E.isLeft(read)) return read;
      const handle = read.right;
      if (id === undefined) return E.right({ ...handle, members: handle.members.map((m) => ({ ...m, state })) });
      const p = toId(id);
      if (E.isLeft(p)) return p;
      const idx = handle.members.findIndex((m) => m.id.key === p.right.key);
      if (idx < 0) return E.left(notJoined(p.right.key, handle));
      if (handle.members[idx]?.state === state) return E.right(h); // a no-op answers the handle it was given
      return E.right({ ...handle, members: handle.members.map((m, i) => (i === idx ? { ...m, state } : m)) });
    });
  }

  bind(h: Handle, id?: IdLike, ctx?: CallContext): TaskEither<CompositionError, Handle> {
    return this.setState(h, id, 'bound', ctx);
  }

  unbind(h: Handle, id?: IdLike, ctx?: CallContext): TaskEither<CompositionError, Handle> {
    return this.setState(h, id, 'unbound', ctx);
  }

  /** Works on the handle alone, like `bind`. */
  leave(h: Handle, id: IdLike, ctx?: CallContext): TaskEither<CompositionError, Handle> {
    return guard<CompositionError, Handle>(describeId(id), async () => {
      const read = handleAndContext(h, id, ctx);
      if (E.isLeft(read)) return read;
      const handle = read.right;
      const p = toId(id);
      if (E.isLeft(p)) return p;
      if (!handle.members.some((m) => m.id.key === p.right.key)) return E.left(notJoined(p.right.key, handle));
      return E.right({ ...handle, members: handle.members.filter((m) => m.id.key !== p.right.key) });
    });
  }

  /**
   * Input shape (the handle, an already aborted signal), location (the executor store, and its
   * policy: a read-only store refuses every commit, a create-only one a commit of an executor
   * that exists: `InvalidLocation`), then, under the locks, authorization (`compose` on the
   * executor, `read` on each member) and state (Conflict, NotFound, InUse).
   */
  commit(h: Handle, rawCtx?: CallContext): TaskEither<CompositionError, CommitResult> {
    return guard<CompositionError, CommitResult>(executorKey(h), async () => {
      const hh = readHandle(h);
      if (E.isLeft(hh)) return hh;
      const handle = hh.right;
      const context = decodeCallContext(handle.executor.key, rawCtx);
      if (E.isLeft(context)) return context;
      const ctx = context.right;
      if (ctx?.signal?.aborted === true) return E.left(aborted(handle.executor.key, ctx.signal.reason));
      const r = route(this.w, 'executor', handle.executor);
      if (E.isLeft(r)) return r;
      const { id: xid, store } = r.right;
      const policy = store.policy ?? 'read-write';
      if (policy === 'read-only' || (policy === 'create-only' && handle.revision > 0))
        return E.left(invalidLocation(xid.key, policy, 'compose'));
      // Images and read-only mounts are only used: shared locks. The executor, tasks and writable mounts: exclusive.
      const sharedUse = (m: Member): boolean => m.id.kind === 'image' || (m.id.kind === 'volume' && m.readOnly);
      const exclusive = [xid.key, ...handle.members.filter((m) => !sharedUse(m)).map((m) => m.id.key)];
      const shared = handle.members.filter(sharedUse).map((m) => m.id.key);
      const out = await this.w.registry.locks.with(exclusive, () => this.commitLocked(xid, handle, ctx), shared);
      return E.map(publicCommit)(out);
    });
  }

  /** Commit, under the locks: check, drive the backend, persist, then let the started runs go. */
  private async commitLocked(
    xid: ElementId,
    h: Handle,
    ctx?: CallContext,
  ): Promise<E.Either<CompositionError, DriverCommitResult>> {
    // phase 1: check the handle against the registry
    const checked = this.checkHandle(xid, h, ctx);
    if (E.isLeft(checked)) return checked;
    const { current, elements, before } = checked.right;
    const secrets = new Map<string, Secrets>();
    const runs = this.w.runtime.opener(
      xid.key,
      (task) => specOf(elements.get(task)),
      (task) => secrets.get(task) ?? { env: {}, files: [] },
    );
    const plan = this.plan(xid, current, checked.right.options, before, h, elements, runs, ctx);
    const busy = this.busyTask(plan);
    if (busy !== undefined) return E.left(busy);
    const refused = await this.prepareRuns(plan, secrets);
    if (refused !== undefined) {
      if (ctx?.signal?.aborted === true) return E.left(aborted(xid.key, ctx.signal.reason));
      return E.right(refused);
    }
    // phase 2: the backend applies the steps (it rolls back on failure)
    const out = await this.w.executor.commit(plan);
    if (E.isLeft(out)) {
      this.w.runtime.settle(runs.opened, false);
      if (ctx?.signal?.aborted === true) return E.left(aborted(xid.key, ctx.signal.reason));
      return E.right({ committed: false, error: out.left.error, results: out.left.results });
    }
    // phase 3: persist the composition, the task statuses and the events in one batch
    const persisted = await this.persistCommit(plan, h, current, out.right, runs.opened);
    if (persisted.committed === false) return E.right(persisted);
    // phase 4: the runs are live; what the commit replaced and older runs' output go
    await out.right.retire?.().catch(() => undefined);
    this.afterCommit(xid, out.right.results, elements, runs.opened);
    const handle: Handle = { executor: xid, revision: persisted.executor.revision, options: plan.options, members: h.members };
    return E.right({
      committed: true,
      handle,
      executor: persisted.executor,
      results: withNoops(out.right.results, before, h.members),
    });
  }

  /** Phase 1 of a commit: authorization, the revision, the members present, the executor's options. */
  private checkHandle(
    xid: ElementId,
    h: Handle,
    ctx: CallContext | undefined,
  ): E.Either<
    CompositionError,
    { current: Element | undefined; elements: Map<string, Element>; options: ExecutorOptions; before: Member[] }
  > {
    const reg = this.w.registry;
    const current = reg.get(xid.key);
    const actual = current?.revision ?? 0;
    const principal = principalOf(ctx);
    if (!this.w.authorize(principal, 'compose', xid.key, current)) return E.left(permissionDenied(xid.key, principal, 'compose'));
    for (const m of h.members)
      if (!this.w.authorize(principal, 'read', m.id.key, reg.get(m.id.key)))
        return E.left(permissionDenied(m.id.key, principal, 'read'));
    if (actual !== h.revision) return E.left(conflict(xid.key, h.revision, actual));
    const elements = new Map<string, Element>();
    for (const m of h.members) {
      const el = reg.get(m.id.key);
      if (el === undefined) return E.left(notFound(m.id.key));
      elements.set(m.id.key, el);
    }
    const comp = reg.composition(xid.key);
    // a new executor takes the handle's options: decoded again, as a handle is a plain value anyone can build
    const options = comp === undefined ? this.options(xid.key, h.options) : E.right(comp.options);
    if (E.isLeft(options)) return options;
    return E.right({ current, elements, options: options.right, before: (comp?.members ?? []).map(fromRecord) });
  }

  /** Phase 3 of a commit: one write of the executor, its composition, the task statuses and the events; a failed write undoes the driver's commit. */
  private async persistCommit(
    plan: CommitPlan,
    h: Handle,
    current: Element | undefined,
    done: DriverCommitted,
    opened: readonly ActiveRun[],
  ): Promise<{ committed: true; executor: Element } | DriverCommitResult> {
    const xid = plan.executor;
    const { results } = done;
    const revision = (current?.revision ?? 0) + 1;
    const t = new Date().toISOString();
    const executor: Element = {
      id: xid,
      ro: current?.ro ?? {},
      rw: current?.rw ?? {},
      revision,
      created: current?.created ?? t,
      modified: t,
      attributes: { ...done.attributes },
    };
    const record: CompositionRecord = { executor: xid.key, options: plan.options, members: h.members.map(toRecord) };
    try {
      await this.w.registry.commit({
        put: [executor, ...this.taskStatuses(results, opened, plan.elements, t)],
        putComposition: [record],
        events: this.events(xid, current, revision, results, opened),
      });
      return { committed: true, executor };
    } catch (err) {
      await this.w.executor.undo(plan, done.attributes).catch(() => undefined);
      this.w.runtime.settle(opened, false);
      const e: AnyError = runtimeError(xid.key, 'could not persist the composition', err);
      this.w.log.error({ executor: xid.key, err: logError(err) }, 'registry write failed: the commit was rolled back');
      return { committed: false, error: e, results };
    }
  }

  /** Phase 4 of a commit: the runs go live, ended tasks are logged, older runs' output is cleared. */
  private afterCommit(
    xid: ElementId,
    results: readonly DriverStepResult[],
    elements: ReadonlyMap<string, Element>,
    opened: readonly ActiveRun[],
  ): void {
    this.w.runtime.settle(opened, true);
    for (const r of opened) this.w.log.info({ task: r.task, executor: xid.key, run: r.run }, 'task started');
    for (const s of results)
      if (
        s.op === 'unbind' &&
        s.status === 'SUCCESS' &&
        !FINAL_STATES.includes(taskStatusOf(elements.get(s.id)?.attributes ?? {}).state)
      )
        this.w.log.info({ task: s.id, executor: xid.key, exitCode: s.task?.exitCode ?? null, reason: 'stopped' }, 'task ended');
    for (const r of opened) if (r.run > 1) void this.w.registry.clearOutput(r.task, r.run).catch(() => undefined);
  }

  /**
   * Before the driver runs: every task to be started must ask only for what backends do
   * (`Unsupported` naming the field otherwise), and its credentials are resolved into `secrets`.
   * Answers the refused commit, or `undefined` to go on.
   */
  private async prepareRuns(plan: CommitPlan, secrets: Map<string, Secrets>): Promise<DriverCommitResult | undefined> {
    for (const s of plan.steps) {
      if (s.op !== 'bind' || s.member?.id.kind !== 'task') continue;
      const spec = specOf(plan.elements.get(s.id));
      const refused = unsupportedField(s.id, spec);
      const got =
        refused === undefined ? await resolveSecrets(this.w.credentials, idOfKey(s.id), plan.executor, spec) : E.left(refused);
      if (E.isLeft(got))
        return { committed: false, error: got.left, results: [{ id: s.id, op: 'bind', status: 'ERROR', error: got.left }] };
      secrets.set(s.id, got.right);
    }
    return undefined;
  }

  /** A task to be started that is running already (here or in another executor) answers InUse. */
  private busyTask(plan: CommitPlan): CompositionError | undefined {
    for (const s of plan.steps) {
      if (s.op !== 'bind' || s.member?.id.kind !== 'task') continue;
      const st = taskStatusOf(plan.elements.get(s.id)?.attributes ?? {});
      const running = this.w.runtime.active(s.id) !== undefined || st.state === 'running' || st.state === 'starting';
      if (running) return inUse(s.id, [st.executor?.key ?? plan.executor.key]);
    }
    return undefined;
  }

  /** New task statuses: started runs are running; tasks unbound by this commit are killed (reason stopped). */
  private taskStatuses(
    results: readonly DriverStepResult[],
    opened: readonly ActiveRun[],
    elements: ReadonlyMap<string, Element>,
    t: string,
  ): Element[] {
    const out: Element[] = [];
    for (const r of opened) {
      const el = elements.get(r.task);
      if (el !== undefined) out.push({ ...el, attributes: { ...el.attributes, status: this.w.runtime.runningStatus(r) } });
    }
    for (const s of results) {
      if (s.op !== 'unbind' || s.status !== 'SUCCESS' || !s.id.startsWith('task:')) continue;
      const el = elements.get(s.id) ?? this.w.registry.get(s.id);
      if (el === undefined) continue;
      const st = taskStatusOf(el.attributes);
      if (FINAL_STATES.includes(st.state) || st.run === 0) continue;
      const status: TaskStatus = {
        ...st,
        state: 'killed',
        reason: 'stopped',
        exitCode: s.task?.exitCode ?? null,
        endedAt: t,
      };
      out.push({ ...el, attributes: { ...el.attributes, status } });
    }
    return out;
  }

  /** The commit's events: the executor created/modified, then left/joined/unbound/bound per member. */
  private events(
    xid: ElementId,
    current: Element | undefined,
    revision: number,
    results: readonly DriverStepResult[],
    opened: readonly ActiveRun[],
  ): EventDraft[] {
    const events: EventDraft[] = [
      current === undefined
        ? { type: 'created', id: xid.key, revision, detail: {} }
        : { type: 'modified', id: xid.key, revision, detail: { composition: true } },
    ];
    const evType = { join: 'joined', leave: 'left', bind: 'bound', unbind: 'unbound' } as const;
    for (const s of results) {
      if (s.status !== 'SUCCESS' || s.op === 'create') continue;
      const run = s.op === 'bind' ? opened.find((r) => r.task === s.id) : undefined;
      const ended =
        s.op === 'unbind' && s.id.startsWith('task:') ? { exitCode: s.task?.exitCode ?? null, reason: 'stopped' } : {};
      events.push({
        type: evType[s.op],
        id: s.id,
        revision,
        detail: { executor: xid.key, ...(run === undefined ? {} : { run: run.run }), ...ended },
      });
    }
    return events;
  }

  private plan(
    xid: ElementId,
    current: Element | undefined,
    options: ExecutorOptions,
    before: readonly Member[],
    h: Handle,
    elements: ReadonlyMap<string, Element>,
    runs: RunOpener,
    ctx?: CallContext,
  ): CommitPlan {
    const after = h.members;
    const same = (a: Member, b: Member): boolean => a.mountpoint === b.mountpoint && a.readOnly === b.readOnly;
    const beforeBy = new Map(before.map((m) => [m.id.key, m]));
    const afterBy = new Map(after.map((m) => [m.id.key, m]));
    const unbinds: PlanStep[] = [];
    const leaves: PlanStep[] = [];
    const joins: PlanStep[] = [];
    const binds: PlanStep[] = [];
    for (const b of before) {
      const a = afterBy.get(b.id.key);
      const gone = a === undefined || !same(a, b);
      if (b.state === 'bound' && (gone || a.state === 'unbound')) unbinds.push({ op: 'unbind', id: b.id.key, member: b });
      if (gone) leaves.push({ op: 'leave', id: b.id.key, member: b });
    }
    for (const a of after) {
      const b = beforeBy.get(a.id.key);
      const fresh = b === undefined || !same(a, b);
      if (fresh) joins.push({ op: 'join', id: a.id.key, member: a });
      if (a.state === 'bound' && (fresh || b.state === 'unbound')) binds.push({ op: 'bind', id: a.id.key, member: a });
    }
    const create: PlanStep[] = current === undefined ? [{ op: 'create', id: xid.key }] : [];
    return {
      executor: xid,
      exists: current !== undefined,
      options,
      attributes: current?.attributes ?? {},
      before,
      after,
      steps: [...create, ...unbinds, ...leaves, ...joins, ...binds],
      elements,
      runs,
      ...(ctx?.signal === undefined ? {} : { signal: ctx.signal }),
    };
  }
}

/** What a driver's commit answers when it applied every step. */
type DriverCommitted = Extract<DriverCommit, { _tag: 'Right' }>['right'];

/** A commit's result as the driver reports it: steps name their elements by key. */
type DriverCommitResult =
  | (Omit<Extract<CommitResult, { committed: true }>, 'results'> & { readonly results: readonly DriverStepResult[] })
  | (Omit<Extract<CommitResult, { committed: false }>, 'results'> & { readonly results: readonly DriverStepResult[] });

/** The commit result lessl answers: every step's ID an `ElementId`. */
const publicCommit = (r: DriverCommitResult): CommitResult => ({ ...r, results: r.results.map(publicStepResult) });

/** Adds a NOOP result for every member the commit did not touch. */
const withNoops = (
  results: readonly DriverStepResult[],
  before: readonly Member[],
  after: readonly Member[],
): DriverStepResult[] => {
  const touched = new Set(results.map((r) => r.id));
  const out = [...results];
  const was = new Map(before.map((m) => [m.id.key, m]));
  for (const m of after)
    if (!touched.has(m.id.key) && was.has(m.id.key))
      out.push({ id: m.id.key, op: m.state === 'bound' ? 'bind' : 'join', status: 'NOOP' });
  return out;
};
