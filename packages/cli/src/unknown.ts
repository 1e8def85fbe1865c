/**
 * Reading values of unknown shape (parsed JSON, thrown values) without casts.
 */

/** Field `k` of `u` when `u` is an object that has it, else undefined. */
export const field = (u: unknown, k: string): unknown =>
  typeof u === 'object' && u !== null && k in u ? Reflect.get(u, k) : undefined;

/** The message of a thrown value. */
export const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e));
