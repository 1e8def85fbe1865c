/**
 * Reading values of unknown shape (parsed JSON, Docker's answers, thrown values) without casts.
 */

/** True for a plain object (not null, not an array). */
export const isObject = (u: unknown): u is Readonly<Record<string, unknown>> =>
  typeof u === 'object' && u !== null && !Array.isArray(u);

/** Field `k` of `u` when `u` is an object that has it, else undefined. */
export const fieldOf = (u: unknown, k: string): unknown =>
  typeof u === 'object' && u !== null && k in u ? Reflect.get(u, k) : undefined;

/** The message of a thrown value. */
export const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e));
