/**
 * The options objects of every public call, decoded exactly with `decodeOptions`: an unknown key
 * (a typo such as `ifRevison` or `readonly`) or a value of the wrong type is `InvalidEntry`
 * naming it, so a misspelt option never silently does nothing.
 */
import type * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import type { InvalidEntry } from './errors.js';
import type { Progress } from './store.js';
import { decodeOptions, fnC, instanceC } from './task.js';

const int = (name: string, ok: (n: number) => boolean) => t.refinement(t.number, (n) => Number.isInteger(n) && ok(n), name);
const NonNegInt = int('NonNegativeInteger', (n) => n >= 0);
const AbortSignalC = instanceC('AbortSignal', AbortSignal);
const Principal = t.string;
const OnProgress = fnC<(p: Progress) => void>('ProgressCallback');

/** `CallContext`: who calls, a signal, a progress callback. */
export const CallContextProps = { principal: Principal, signal: AbortSignalC, onProgress: OnProgress };
/** `UpdateOptions`. */
export const UpdateOptionsProps = { ifRevision: NonNegInt };
/** `JoinOptions`. */
export const JoinOptionsProps = { mountpoint: t.string, readOnly: t.boolean };
/** `InputOptions` of `tasks.input`: a call context. */
export const InputOptionsProps = CallContextProps;
/** The fields of `ConnectOptions`. */
export const ConnectOptionsProps = CallContextProps;
/** `WaitOptions`: a call context. */
export const WaitOptionsProps = CallContextProps;
/** `LogsOptions`. */
export const LogsOptionsProps = { ...CallContextProps, follow: t.boolean, since: NonNegInt };
/** `KillOptions` (its `signal` is the one sent to the process). */
export const KillOptionsProps = {
  principal: Principal,
  onProgress: OnProgress,
  signal: t.keyof({ TERM: null, KILL: null }),
  graceMs: int('GraceMs', (n) => n >= 0 && n <= 3_600_000),
};
/** `StreamOptions` of `events.stream`. */
export const StreamOptionsProps = {
  since: NonNegInt,
  signal: AbortSignalC,
  highWaterMark: int('PositiveInteger', (n) => n >= 1),
  overflow: t.keyof({ error: null, 'drop-oldest': null }),
};
/** The fields of a `CreateRequest` (each judged by `create` itself). */
export const CreateRequestProps = {
  id: t.unknown,
  parent: t.unknown,
  data: t.unknown,
  checksum: t.unknown,
  ro: t.unknown,
  rw: t.unknown,
  spec: t.unknown,
  options: t.unknown,
};
/** The fields of a `RunRequest` (image, spec and executor options are judged by the calls `run` makes). */
export const RunRequestProps = {
  ...CallContextProps,
  image: t.unknown,
  volumes: t.unknown,
  spec: t.unknown,
  options: t.unknown,
  keep: t.boolean,
  stdin: t.unknown,
};
/** One of a `RunRequest`'s `volumes`. */
export const RunVolumeProps = { id: t.unknown, mountpoint: t.unknown, readOnly: t.boolean };

/**
 * Decodes the call context `u` of a call about `id` exactly (`principal` a string, `signal` an
 * `AbortSignal`, `onProgress` a function; nothing else). Never throws.
 */
export const decodeCallContext = (
  id: string,
  u: unknown,
): E.Either<InvalidEntry, t.TypeOf<t.PartialC<typeof CallContextProps>>> =>
  decodeOptions(CallContextProps, u, 'call context', { id, prefix: '' });
