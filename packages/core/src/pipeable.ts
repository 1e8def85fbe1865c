/**
 * Data-last composer functions, for fp-ts pipelines: the handle comes last, so a composition
 * reads top to bottom instead of nesting.
 *
 * @example
 * import { pipe } from 'fp-ts/lib/function.js';
 * import * as TE from 'fp-ts/lib/TaskEither.js';
 * const c = composeWith(lessl.composer);
 * const started = pipe(
 *   lessl.composer.handle('executor://local/web'),
 *   TE.chain(c.join('image://local/base')),
 *   TE.chain(c.join('task://local/hello')),
 *   TE.chain(c.bind('task://local/hello')),
 *   TE.chain(c.commit()),
 * );
 */
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import type { CommitResult, Composer, Handle, JoinOptions } from './composition.js';
import type { CompositionError } from './errors.js';
import type { IdLike } from './id.js';
import type { CallContext } from './store.js';

/** A step of a pipeline: takes the handle last. */
export type HandleStep<A> = (h: Handle) => TaskEither<CompositionError, A>;

/** The composer's transitions with the handle last (see the module example). */
export interface PipeableComposer {
  join(id: IdLike, opts?: JoinOptions, ctx?: CallContext): HandleStep<Handle>;
  bind(id?: IdLike, ctx?: CallContext): HandleStep<Handle>;
  unbind(id?: IdLike, ctx?: CallContext): HandleStep<Handle>;
  leave(id: IdLike, ctx?: CallContext): HandleStep<Handle>;
  commit(ctx?: CallContext): HandleStep<CommitResult>;
}

/** Data-last functions over `composer`, for `pipe(handle, TE.chain(c.join(id)), ...)`. */
export const composeWith = (composer: Composer): PipeableComposer => ({
  join: (id, opts, ctx) => (h) => composer.join(h, id, opts, ctx),
  bind: (id, ctx) => (h) => composer.bind(h, id, ctx),
  unbind: (id, ctx) => (h) => composer.unbind(h, id, ctx),
  leave: (id, ctx) => (h) => composer.leave(h, id, ctx),
  commit: (ctx) => (h) => composer.commit(h, ctx),
});
