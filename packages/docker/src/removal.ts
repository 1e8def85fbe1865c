/**
 * What the image and volume drivers share when an element goes: removing its Docker object
 * (helpers of lessl's still holding it go first; gone is fine; in use is `InUse` naming the
 * users) and naming the containers of others that use it.
 */
import * as E from 'fp-ts/lib/Either.js';
import type { DeleteError } from '@lessl/core';
import { fromDocker, statusOf } from './errors.js';
import { deleteErrorOf } from './driver-errors.js';
import type { Host } from './host.js';
import type { Filters } from './labels.js';

/** How one element's Docker object goes. */
export interface Removal {
  /** The element's ID (named in errors). */
  readonly key: string;
  /** Filters that find the containers using the object. */
  readonly users: Filters;
  /** Removes the object once. */
  readonly remove: () => Promise<unknown>;
  /** What else goes once the object is gone (an image's stale content). */
  readonly after?: () => Promise<unknown>;
}

/**
 * Removes the object: a helper of lessl's whose removal failed earlier may still hold it, so on
 * a 409 those helpers go first and the removal is tried again.
 */
export const removeOwned = async (engine: Host, r: Removal): Promise<E.Either<DeleteError, void>> => {
  try {
    await r.remove().catch(async (err: unknown) => {
      if (statusOf(err) === 404) return;
      if (statusOf(err) === 409 && (await engine.removeOwnHelpers(r.users))) return r.remove();
      throw err;
    });
    await r.after?.();
    return E.right(undefined);
  } catch (err) {
    if (statusOf(err) === 404) return E.right(undefined);
    if (statusOf(err) === 409) return E.left(deleteErrorOf(fromDocker(r.key, err, 'InUse', await engine.users(r.users))));
    return E.left(deleteErrorOf(fromDocker(r.key, err)));
  }
};

/** The containers of others that use the object (they keep the element from going). */
export const foreignReferences = async (
  engine: Host,
  key: string,
  users: Filters,
): Promise<E.Either<DeleteError, readonly string[]>> => {
  try {
    return E.right(await engine.foreignUsers(users));
  } catch (err) {
    return E.left(deleteErrorOf(fromDocker(key, err)));
  }
};
