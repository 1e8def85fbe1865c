/**
 * The generic composer: immutable handles, validation at each verb, and a commit that diffs
 * the handle against the executor's record, lets the executor driver apply the steps (it rolls
 * back on failure), then persists the new composition with its events in one batch.
 */
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import { randomUUID } from 'node:crypto';
import {
  describeId,
  conflict,
  invalidEntry,
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
  type IdLike,
  type JoinOptions,
  type Member,
  type MemberState,
  type StepResult,
} from '@lessl/core';
import type { CommitPlan, PlanStep } from './drivers.js';
import type { CompositionRecord, EventDraft, MemberRecord } from './registry.js';
import { guard, route, type Wiring } from './stores.js';

const principalOf = (ctx?: CallContext): string => ctx?.principal ?? 'anonymous';

const isHandle = (h: unknown): h is Handle =>
  typeof h === 'object' &&
  h !== null &&
  typeof (h as Handle).revision === 'number' &&
  Array.isArray((h as Handle).members) &&
  typeof (h as Handle).executor?.key === 'string';

const toRecord = (m: Member): MemberRecord => ({
  id: m.id.key,
  ...(m.mountpoint === undefined ? {} : { mountpoint: m.mountpoint }),
  readOnly: m.readOnly,
  state: m.state,
});

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

const validOptions = (o: unknown): string | undefined => {
  if (o === undefined) return undefined;
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return 'options must be an object';
  const x = o as Record<string, unknown>;
  for (const k of ['memoryBytes', 'pids'] as const)
    if (x[k] !== undefined && (!Number.isInteger(x[k]) || (x[k] as number) <= 0)) return `${k} must be a positive integer`;
  if (x.cpus !== undefined && (typeof x.cpus !== 'number' || !(x.cpus > 0))) return 'cpus must be a positive number';
  if (x.readOnlyRootfs !== undefined && typeof x.readOnlyRootfs !== 'boolean') return 'readOnlyRootfs must be a boolean';
  if (x.network !== undefined && typeof x.network !== 'string') return 'network must be a string';
  return undefined;
};

/** The composer over a wiring. */
export class GenericComposer implements Composer {
  constructor(private readonly w: Wiring) {}

  handle(executor?: IdLike, options?: ExecutorOptions, ctx?: CallContext): TaskEither<CompositionError, Handle> {
    return guard<CompositionError, Handle>(describeId(executor), async () => {
      const bad = validOptions(options);
      if (bad !== undefined) return E.left(invalidEntry(`invalid executor options: ${bad}`, describeId(executor), ['options']));
      let raw = executor;
      if (raw === undefined) {
        const first = [...this.w.stores.values()].find((s) => s.kind === 'executor');
        if (first === undefined) return E.left(unknownLocation('executor://', 'executor://'));
        raw = `executor://${first.name}/x-${randomUUID().slice(0, 12)}`;
      }
      const r = route(this.w, 'executor', raw);
      if (E.isLeft(r)) return r;
      const { id } = r.right;
      const el = this.w.registry.get(id.key);
      if (el !== undefined && !this.w.authorize(principalOf(ctx), 'read', id.key, el))
        return E.left(permissionDenied(id.key, principalOf(ctx), 'read'));
      if (el === undefined) return E.right({ executor: id, revision: 0, options: options ?? {}, members: [] });
      const comp = this.w.registry.composition(id.key);
      return E.right({
        executor: id,
        revision: el.revision,
        options: comp?.options ?? {},
        members: (comp?.members ?? []).map(fromRecord),
      });
    });
  }

  join(h: Handle, id: IdLike, opts?: JoinOptions, _ctx?: CallContext): TaskEither<CompositionError, Handle> {
    return guard<CompositionError, Handle>(describeId(id), async () => {
      if (!isHandle(h)) return E.left(invalidEntry('not a composition handle', '', ['handle']));
      const p = toId(id);
      if (E.isLeft(p)) return p;
      const eid = p.right;
      if (eid.kind === 'executor') return E.left(invalidEntry('an executor cannot join a composition', eid.key, ['id']));
      const r = route(this.w, eid.kind, eid);
      if (E.isLeft(r)) return r;
      if (this.w.registry.get(eid.key) === undefined) return E.left(notFound(eid.key));
      if (opts !== undefined && (typeof opts !== 'object' || opts === null))
        return E.left(invalidEntry('join options must be an object', eid.key, ['options']));
      if (h.members.some((m) => m.id.key === eid.key)) return E.right(h); // idempotent
      if (eid.kind === 'image' && h.members.some((m) => m.id.kind === 'image'))
        return E.left(invalidEntry('an image is already joined as the root filesystem', eid.key, ['id']));
      let member: Member = { id: eid, readOnly: opts?.readOnly === true, state: 'unbound' };
      if (eid.kind === 'volume') {
        if (!validMountpoint(opts?.mountpoint))
          return E.left(invalidEntry('a volume needs an absolute mountpoint other than / (no "..")', eid.key, ['mountpoint']));
        const mp = opts.mountpoint.replace(/\/+$/, '');
        if (h.members.some((m) => m.mountpoint === mp))
          return E.left(invalidEntry(`mountpoint ${mp} is already used`, eid.key, ['mountpoint']));
        member = { ...member, mountpoint: mp };
      } else if (opts?.mountpoint !== undefined)
        return E.left(invalidEntry(`only volumes take a mountpoint`, eid.key, ['mountpoint']));
      return E.right({ ...h, members: [...h.members, member] });
    });
  }

  private setState(h: Handle, id: IdLike | undefined, state: MemberState): TaskEither<CompositionError, Handle> {
    return guard<CompositionError, Handle>(describeId(id), async () => {
      if (!isHandle(h)) return E.left(invalidEntry('not a composition handle', '', ['handle']));
      if (id === undefined) return E.right({ ...h, members: h.members.map((m) => ({ ...m, state })) });
      const p = toId(id);
      if (E.isLeft(p)) return p;
      const idx = h.members.findIndex((m) => m.id.key === p.right.key);
      if (idx < 0)
        return E.left({ ...notFound(p.right.key), message: `not found: ${p.right.key} is not joined to ${h.executor.key}` });
      if (h.members[idx]?.state === state) return E.right(h);
      return E.right({ ...h, members: h.members.map((m, i) => (i === idx ? { ...m, state } : m)) });
    });
  }

  bind(h: Handle, id?: IdLike, _ctx?: CallContext): TaskEither<CompositionError, Handle> {
    return this.setState(h, id, 'bound');
  }

  unbind(h: Handle, id?: IdLike, _ctx?: CallContext): TaskEither<CompositionError, Handle> {
    return this.setState(h, id, 'unbound');
  }

  leave(h: Handle, id: IdLike, _ctx?: CallContext): TaskEither<CompositionError, Handle> {
    return guard<CompositionError, Handle>(describeId(id), async () => {
      if (!isHandle(h)) return E.left(invalidEntry('not a composition handle', '', ['handle']));
      const p = toId(id);
      if (E.isLeft(p)) return p;
      if (!h.members.some((m) => m.id.key === p.right.key))
        return E.left({ ...notFound(p.right.key), message: `not found: ${p.right.key} is not joined to ${h.executor.key}` });
      return E.right({ ...h, members: h.members.filter((m) => m.id.key !== p.right.key) });
    });
  }

  commit(h: Handle, ctx?: CallContext): TaskEither<CompositionError, CommitResult> {
    return guard<CompositionError, CommitResult>(
      describeId((h as { executor?: unknown } | null | undefined)?.executor),
      async () => {
        if (!isHandle(h)) return E.left(invalidEntry('not a composition handle', '', ['handle']));
        const r = route(this.w, 'executor', h.executor);
        if (E.isLeft(r)) return r;
        const xid = r.right.id;
        const reg = this.w.registry;
        const keys = [xid.key, ...h.members.map((m) => m.id.key)];
        return reg.locks.with(keys, async () => {
          const current = reg.get(xid.key);
          const actual = current?.revision ?? 0;
          if (actual !== h.revision) return E.left(conflict(xid.key, h.revision, actual));
          if (!this.w.authorize(principalOf(ctx), 'compose', xid.key, current))
            return E.left(permissionDenied(xid.key, principalOf(ctx), 'compose'));
          const elements = new Map<string, Element>();
          for (const m of h.members) {
            const el = reg.get(m.id.key);
            if (el === undefined) return E.left(notFound(m.id.key));
            elements.set(m.id.key, el);
          }
          const comp = reg.composition(xid.key);
          const before = (comp?.members ?? []).map(fromRecord);
          const after = h.members;
          const plan = this.plan(xid, current, comp, before, after, h, elements, ctx);
          const out = await this.w.executor.commit(plan);
          if (E.isLeft(out)) return E.right({ committed: false, error: out.left.error, results: out.left.results });
          const results = out.right.results;
          const states = out.right.states ?? {};
          const settled = after.map((m) =>
            states[m.id.key] === undefined ? m : { ...m, state: states[m.id.key] as MemberState },
          );
          const t = new Date().toISOString();
          const revision = actual + 1;
          const executor: Element = {
            id: xid,
            ro: current?.ro ?? {},
            rw: current?.rw ?? {},
            revision,
            created: current?.created ?? t,
            modified: t,
            attributes: { ...out.right.attributes },
          };
          const record: CompositionRecord = { executor: xid.key, options: plan.options, members: settled.map(toRecord) };
          const events: EventDraft[] = [
            current === undefined
              ? { type: 'created', id: xid.key, revision, detail: {} }
              : { type: 'modified', id: xid.key, revision, detail: { composition: true } },
          ];
          const evType = { join: 'joined', leave: 'left', bind: 'bound', unbind: 'unbound' } as const;
          for (const s of results) {
            if (s.status !== 'SUCCESS' || s.op === 'create') continue;
            events.push({
              type: evType[s.op],
              id: s.id,
              revision,
              detail: {
                executor: xid.key,
                ...(s.task === undefined || s.op === 'bind' ? {} : { exitCode: s.task.exitCode, reason: s.task.reason }),
              },
            });
            // a task that ran to its end during the commit is unbound again, with how it ended
            if (s.op === 'bind' && states[s.id] === 'unbound')
              events.push({
                type: 'unbound',
                id: s.id,
                revision,
                detail: { executor: xid.key, exitCode: s.task?.exitCode ?? null, reason: s.task?.reason ?? 'exited' },
              });
          }
          try {
            await reg.commit({ put: [executor], putComposition: [record], events });
          } catch (err) {
            await this.w.executor.undo(plan, out.right.attributes).catch(() => undefined);
            const e: AnyError = runtimeError(xid.key, 'could not persist the composition', err);
            return E.right({ committed: false, error: e, results });
          }
          const handle: Handle = { executor: xid, revision, options: plan.options, members: settled };
          return E.right({ committed: true, handle, executor, results: withNoops(results, before, settled) });
        });
      },
    );
  }

  private plan(
    xid: ElementId,
    current: Element | undefined,
    comp: CompositionRecord | undefined,
    before: readonly Member[],
    after: readonly Member[],
    h: Handle,
    elements: ReadonlyMap<string, Element>,
    ctx?: CallContext,
  ): CommitPlan {
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
      options: comp?.options ?? h.options,
      attributes: current?.attributes ?? {},
      before,
      after,
      steps: [...create, ...unbinds, ...leaves, ...joins, ...binds],
      elements,
      ...(ctx?.signal === undefined ? {} : { signal: ctx.signal }),
    };
  }
}

/** Adds a NOOP result for every member the commit did not touch. */
const withNoops = (results: readonly StepResult[], before: readonly Member[], after: readonly Member[]): StepResult[] => {
  const touched = new Set(results.map((r) => r.id));
  const out = [...results];
  const was = new Map(before.map((m) => [m.id.key, m]));
  for (const m of after)
    if (!touched.has(m.id.key) && was.has(m.id.key))
      out.push({ id: m.id.key, op: m.state === 'bound' ? 'bind' : 'join', status: 'NOOP' });
  return out;
};
