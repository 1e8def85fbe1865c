/**
 * The service's way to lessl elements: through the backend's stores and composer only, always
 * with a principal, so that the backend's authorizer (`ownerAuthorizer`) is the one place that
 * decides who may see or touch an element. The service's own records (users, tokens, jobs, task
 * records) are its level tables (db.ts), not elements.
 *
 * A service task is lessl elements named after it:
 *   executor://local/<task>          the container
 *   task://local/<task>.main         its main process (keeps the container up)
 *   task://local/<task>.c<i>         command i
 *   volume://local/<task>.r<i>       the resource files of one directory
 */
import * as E from 'fp-ts/lib/Either.js';
import { fromUtf8, keyOf, type CallContext, type Element, type ElementKind } from '@lessl/core';
import type { Backend } from '@lessl/kit';

/** The principal the service itself uses (the authorizer lets it do everything). */
export const SYSTEM = 'lessl-service';

/** The store the service keeps its tasks' elements in. */
const LOCAL = 'local';

/** Who is calling, as far as the service's choice of principal goes. */
export interface Caller {
  readonly name: string;
  readonly admin: boolean;
}

/** How the service names a user to the SDK: `user:<name>` (user names have no `:`), never the service's own name. */
export const USER_PRINCIPAL = 'user:';

/** The context of a call made as `user` itself: what it owns, and public images. */
export const as = (user: string): CallContext => ({ principal: `${USER_PRINCIPAL}${user}` });

/** The context of a call made on behalf of `u`: admins act as the service (they see everything). */
export const onBehalfOf = (u: Caller): CallContext => (u.admin ? SERVICE : as(u.name));

/** The service's own context. */
export const SERVICE: CallContext = { principal: SYSTEM };

/** The lessl element IDs of a service task. */
export const elementsOf = (task: string) => ({
  executor: keyOf('executor', LOCAL, task),
  main: keyOf('task', LOCAL, `${task}.main`),
  command: (i: number) => keyOf('task', LOCAL, `${task}.c${i}`),
  volume: (i: number) => keyOf('volume', LOCAL, `${task}.r${i}`),
});

/** The ID of a caller's own volume, by name. */
export const volumeId = (name: string): string => keyOf('volume', LOCAL, name);

/** The service task an element belongs to (from its name), or undefined. */
export const serviceTaskOf = (elementId: string): string | undefined =>
  /^[a-z]+:\/\/local\/(t_[a-z0-9]+)(\.|$)/.exec(elementId)?.[1];

/**
 * The element, read through its store with `ctx`; undefined when it is not there or the
 * authorizer does not let the principal read it (the service answers both alike).
 */
export const readElement = async (
  b: Backend,
  kind: ElementKind,
  id: string,
  ctx: CallContext = SERVICE,
): Promise<Element | undefined> => {
  const r = await b.stores[kind].read(id, undefined, ctx)();
  return E.isRight(r) ? r.right : undefined;
};

/** What `listElements` selects: a store, names starting with a prefix, ro equality, a limit. */
export interface Selection {
  readonly store: string;
  readonly namePrefix?: string;
  readonly ro?: Readonly<Record<string, string>>;
  readonly limit?: number;
}

/** The elements of `kind` the principal of `ctx` may read, in ID order (none when the store refuses). */
export const listElements = async (
  b: Backend,
  kind: ElementKind,
  sel: Selection,
  ctx: CallContext = SERVICE,
): Promise<readonly Element[]> => {
  const r = await b.stores[kind].list(sel, ctx)();
  return E.isRight(r) ? r.right : [];
};

/** The task's own elements of `kind` (by name, and marked with the task in their ro metadata). */
export const taskElements = (b: Backend, kind: 'task' | 'volume', task: string, limit?: number): Promise<readonly Element[]> =>
  listElements(b, kind, {
    store: LOCAL,
    namePrefix: `${task}.`,
    ro: { 'lessl.service.task': task },
    ...(limit === undefined ? {} : { limit }),
  });

/** The members of an executor (none when it does not exist). */
export const membersOf = async (b: Backend, executor: string): Promise<readonly Element['id'][]> => {
  const h = await b.composer.handle(executor, undefined, SERVICE)();
  return E.isRight(h) ? h.right.members.map((m) => m.id) : [];
};

/** True when an element is public: it has no owner (public images). */
export const isPublic = (el: Element): boolean => fromUtf8(el.ro).owner === undefined;
