/**
 * The lessl error taxonomy (docs/errors.md): a tagged union, every error with a
 * human message, the ID concerned and its details. Stores answer these; they never throw.
 */
import { safeShow } from './safe.js';

interface Base<T extends string> {
  readonly _tag: T;
  readonly message: string;
  /** The element (or store) ID concerned, in string form; '' when none applies. */
  readonly id: string;
}

/** The store named in the ID is not configured. */
export interface UnknownLocation extends Base<'UnknownLocation'> {
  readonly store: string;
}
/** The store's policy forbids the operation (read-only / create-only). */
export interface InvalidLocation extends Base<'InvalidLocation'> {
  readonly policy: StorePolicy;
  readonly operation: Operation;
}
/** An element with this ID exists already. */
export interface NameCollision extends Base<'NameCollision'> {}
/** The parent ID does not exist. */
export interface UnknownParent extends Base<'UnknownParent'> {
  readonly parent: string;
}
/** The parent exists but cannot be used as one. */
export interface InvalidParent extends Base<'InvalidParent'> {
  readonly parent: string;
  readonly reason: string;
}
/** Malformed input: offending keys (or fields) listed. */
export interface InvalidEntry extends Base<'InvalidEntry'> {
  readonly keys: readonly string[];
  readonly detail?: Readonly<Record<string, unknown>>;
}
/** rw keys that are present in ro. */
export interface ReadOnlyKey extends Base<'ReadOnlyKey'> {
  readonly keys: readonly string[];
}
/** Could not persist or apply the change. */
export interface RuntimeError extends Base<'RuntimeError'> {
  readonly cause?: string;
}
/** No element with this ID in its store. */
export interface NotFound extends Base<'NotFound'> {}
/** A malformed filter spec. */
export interface InvalidFilterSpec extends Base<'InvalidFilterSpec'> {
  readonly reason: string;
}
/** The element is referenced: children, compositions, backend objects. */
export interface InUse extends Base<'InUse'> {
  readonly referencedBy: readonly string[];
}
/** The authorizer refused. */
export interface PermissionDenied extends Base<'PermissionDenied'> {
  readonly principal: string;
  readonly operation: Operation;
}
/** Optimistic concurrency: the element changed since the revision the caller holds. */
export interface Conflict extends Base<'Conflict'> {
  readonly expected: number;
  readonly actual: number;
}
/** The data did not hash to the checksum given. Nothing was created. */
export interface ChecksumMismatch extends Base<'ChecksumMismatch'> {
  readonly expected: string;
  readonly actual: string;
}
/** The checksum algorithm is not supported (only `sha256:<hex>`). */
export interface UnsupportedChecksum extends Base<'UnsupportedChecksum'> {
  readonly checksum: string;
}
/** The backend cannot do this. */
export interface Unsupported extends Base<'Unsupported'> {
  readonly feature: string;
}
/** The caller's `AbortSignal` fired: the operation was cancelled and what it had started was undone. */
export interface Aborted extends Base<'Aborted'> {
  readonly reason: string;
}
/** The backend is unreachable; retryable. */
export interface Unavailable extends Base<'Unavailable'> {
  readonly cause?: string;
}

/** Store policies. */
export type StorePolicy = 'read-write' | 'read-only' | 'create-only';
/** Operations named in errors and passed to authorizers. */
export type Operation = 'create' | 'read' | 'update' | 'delete' | 'list' | 'compose';

/** Every lessl error. */
export type AnyError =
  | UnknownLocation
  | InvalidLocation
  | NameCollision
  | UnknownParent
  | InvalidParent
  | InvalidEntry
  | ReadOnlyKey
  | RuntimeError
  | NotFound
  | InvalidFilterSpec
  | InUse
  | PermissionDenied
  | Conflict
  | ChecksumMismatch
  | UnsupportedChecksum
  | Unsupported
  | Unavailable
  | Aborted;

/** Every `_tag`. */
export type ErrorTag = AnyError['_tag'];
/** All tags, in taxonomy order. */
export const ERROR_TAGS: readonly ErrorTag[] = [
  'UnknownLocation',
  'InvalidLocation',
  'NameCollision',
  'UnknownParent',
  'InvalidParent',
  'InvalidEntry',
  'ReadOnlyKey',
  'RuntimeError',
  'NotFound',
  'InvalidFilterSpec',
  'InUse',
  'PermissionDenied',
  'Conflict',
  'ChecksumMismatch',
  'UnsupportedChecksum',
  'Unsupported',
  'Unavailable',
  'Aborted',
];

/** The call's store is not configured, or its policy refuses the call. */
export type LocationError = UnknownLocation | InvalidLocation;
/** The parent named is missing, or cannot be one. */
export type ParentError = UnknownParent | InvalidParent;
/** The input is malformed, or sets a read-only metadata key. */
export type InputError = InvalidEntry | ReadOnlyKey;
/** The data's checksum differs, or its algorithm is not supported. */
export type ChecksumError = ChecksumMismatch | UnsupportedChecksum;
/** The backend failed (`RuntimeError`) or could not be reached (`Unavailable`). */
export type Failure = RuntimeError | Unavailable;

/** What `create` can answer. */
export type CreateError =
  LocationError | NameCollision | ParentError | InputError | PermissionDenied | ChecksumError | Unsupported | Failure | Aborted;
/** What `read` and `list` can answer. */
export type ReadError = UnknownLocation | InvalidEntry | NotFound | InvalidFilterSpec | PermissionDenied | Failure;
/** What `update` can answer. */
export type UpdateError = LocationError | NotFound | InputError | PermissionDenied | Conflict | Unsupported | Failure;
/** What `delete` can answer. */
export type DeleteError = LocationError | InvalidEntry | NotFound | InUse | PermissionDenied | Unsupported | Failure;
/** What the composition verbs and `commit` can answer. */
export type CompositionError =
  LocationError | InvalidEntry | NotFound | InUse | InvalidParent | PermissionDenied | Conflict | Unsupported | Failure | Aborted;

/** What the task lifecycle calls (`tasks.wait/logs/kill/status`) can answer. */
export type TaskError = UnknownLocation | InvalidEntry | NotFound | PermissionDenied | Unsupported | Failure | Aborted;

// ---- constructors -------------------------------------------------------

/** Constructs `UnknownLocation`. */
export const unknownLocation = (id: string, store: string): UnknownLocation => ({
  _tag: 'UnknownLocation',
  message: `unknown location: no store "${store}" is configured`,
  id,
  store,
});
/** Constructs `InvalidLocation`. */
export const invalidLocation = (id: string, policy: StorePolicy, operation: Operation): InvalidLocation => ({
  _tag: 'InvalidLocation',
  message: `invalid location: the store of ${id} is ${policy}; ${operation} is not allowed`,
  id,
  policy,
  operation,
});
/** Constructs `NameCollision`. */
export const nameCollision = (id: string): NameCollision => ({
  _tag: 'NameCollision',
  message: `name collision: ${id} exists already`,
  id,
});
/** Constructs `UnknownParent`. */
export const unknownParent = (id: string, parent: string): UnknownParent => ({
  _tag: 'UnknownParent',
  message: `unknown parent: ${parent} does not exist`,
  id,
  parent,
});
/** Constructs `InvalidParent`. */
export const invalidParent = (id: string, parent: string, reason: string): InvalidParent => ({
  _tag: 'InvalidParent',
  message: `invalid parent ${parent} for ${id}: ${reason}`,
  id,
  parent,
  reason,
});
/** Constructs `InvalidEntry`. */
export const invalidEntry = (
  message: string,
  id: string,
  keys: readonly string[],
  detail?: Readonly<Record<string, unknown>>,
): InvalidEntry => ({
  _tag: 'InvalidEntry',
  message,
  id,
  keys,
  ...(detail === undefined ? {} : { detail }),
});
/** Constructs `ReadOnlyKey`. */
export const readOnlyKey = (id: string, keys: readonly string[]): ReadOnlyKey => ({
  _tag: 'ReadOnlyKey',
  message: `read-only key: ${keys.join(', ')} ${keys.length === 1 ? 'is' : 'are'} fixed in ro metadata of ${id}`,
  id,
  keys,
});
/** Constructs `RuntimeError`. */
export const runtimeError = (id: string, message: string, cause?: unknown): RuntimeError => ({
  _tag: 'RuntimeError',
  message,
  id,
  ...(cause === undefined ? {} : { cause: describeCause(cause) }),
});
/** Constructs `NotFound`. */
export const notFound = (id: string): NotFound => ({ _tag: 'NotFound', message: `not found: ${id}`, id });
/** Constructs `InvalidFilterSpec`. */
export const invalidFilterSpec = (id: string, reason: string): InvalidFilterSpec => ({
  _tag: 'InvalidFilterSpec',
  message: `invalid filter spec: ${reason}`,
  id,
  reason,
});
/** Constructs `InUse`. */
export const inUse = (id: string, referencedBy: readonly string[]): InUse => ({
  _tag: 'InUse',
  message: `in use: ${id} is referenced by ${referencedBy.join(', ')}`,
  id,
  referencedBy,
});
/** Constructs `PermissionDenied`. */
export const permissionDenied = (id: string, principal: string, operation: Operation): PermissionDenied => ({
  _tag: 'PermissionDenied',
  message: `permission denied: ${principal || 'anonymous'} may not ${operation} ${id}`,
  id,
  principal,
  operation,
});
/** Constructs `Conflict`. */
export const conflict = (id: string, expected: number, actual: number): Conflict => ({
  _tag: 'Conflict',
  message: `conflict: ${id} is at revision ${actual}, expected ${expected}`,
  id,
  expected,
  actual,
});
/** Constructs `ChecksumMismatch`. */
export const checksumMismatch = (id: string, expected: string, actual: string): ChecksumMismatch => ({
  _tag: 'ChecksumMismatch',
  message: `checksum mismatch for ${id}: expected ${expected}, got ${actual}`,
  id,
  expected,
  actual,
});
/** Constructs `UnsupportedChecksum`. */
export const unsupportedChecksum = (id: string, checksum: string): UnsupportedChecksum => ({
  _tag: 'UnsupportedChecksum',
  message: `unsupported checksum "${checksum}": expected sha256:<64 hex digits>`,
  id,
  checksum,
});
/** Constructs `Unsupported`. */
export const unsupported = (id: string, feature: string, why?: string): Unsupported => ({
  _tag: 'Unsupported',
  message: `unsupported: ${feature}${why === undefined ? '' : ` (${why})`}`,
  id,
  feature,
});
/** Constructs `Unavailable`. */
export const unavailable = (id: string, message: string, cause?: unknown): Unavailable => ({
  _tag: 'Unavailable',
  message,
  id,
  ...(cause === undefined ? {} : { cause: describeCause(cause) }),
});

/** Constructs `Aborted`; `reason` is the signal's reason, when it has one. */
export const aborted = (id: string, reason?: unknown): Aborted => {
  const why = reason === undefined ? 'aborted' : reason instanceof Error ? reason.message : showValue(reason);
  return { _tag: 'Aborted', message: `aborted: ${id === '' ? '' : `${id}: `}${why}`, id, reason: why };
};

/** A printable form of any value, for messages. Never throws (unlike `String(x)` on hostile objects). */
export const showValue = (u: unknown): string => safeShow(u);

/** A short string for an unknown thrown value. */
export const describeCause = (cause: unknown): string => (cause instanceof Error ? cause.message : showValue(cause));

/** True when `u` is a lessl error value. */
export const isLesslError = (u: unknown): u is AnyError =>
  typeof u === 'object' && u !== null && '_tag' in u && ERROR_TAGS.some((tag) => tag === u._tag);

/** Narrowing helper: `hasTag('NotFound')(e)`. */
export const hasTag =
  <T extends ErrorTag>(tag: T) =>
  (e: unknown): e is Extract<AnyError, { _tag: T }> =>
    isLesslError(e) && e._tag === tag;

/** True for `NotFound`. */
export const isNotFound = hasTag('NotFound');
/** True for `InUse`. */
export const isInUse = hasTag('InUse');
/** True for `Conflict`. */
export const isConflict = hasTag('Conflict');
/** True for `Aborted`. */
export const isAborted = hasTag('Aborted');
/** True for `Unavailable` (retryable). */
export const isUnavailable = hasTag('Unavailable');

/**
 * The Promise façade's rejection: an `Error` carrying the lessl error value.
 * `err.tag` is the `_tag`; `err.error` is the full value with its details.
 */
export class LesslError<E extends AnyError = AnyError> extends Error {
  readonly tag: E['_tag'];
  readonly error: E;
  constructor(error: E) {
    super(error.message);
    this.name = 'LesslError';
    this.tag = error._tag;
    this.error = error;
  }
}
