/** Reading fields of values whose type is not known (errors, Docker's JSON), without casts. */

/** The field `k` of `o` when `o` is an object that has it, else undefined. */
export const prop = (o: unknown, k: string): unknown =>
  typeof o === 'object' && o !== null && k in o ? Reflect.get(o, k) : undefined;

/** True for a plain JSON object (not null, not an array). */
export const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
