/**
 * The task spec (seed 003 + seed 001): what to run inside an executor.
 * Credentials are references (`{ name, ref }`), never values: the spec is safe to log.
 */
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import { invalidEntry, type InvalidEntry } from './errors.js';

const PosInt = t.refinement(t.number, (n) => Number.isInteger(n) && n > 0, 'PositiveInt');
const PosNum = t.refinement(t.number, (n) => Number.isFinite(n) && n > 0, 'PositiveNumber');
const AbsPath = t.refinement(t.string, (s) => s.startsWith('/') && !s.split('/').includes('..'), 'AbsolutePath');
const NonEmptyStrings = t.refinement(
  t.array(t.string),
  (a) => a.length > 0 && a.every((s) => !s.includes('\0')),
  'NonEmptyCommand',
);
// io-ts drops (rather than rejects) record keys outside a refined domain, so check names on the whole record.
const Env = t.refinement(
  t.record(t.string, t.string),
  (r) => Object.keys(r).every((k) => /^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) && Object.values(r).every((v) => !v.includes('\0')),
  'Env',
);

/** Resource limits of a task. */
export const TaskLimitsC = t.partial({
  memoryBytes: PosInt,
  cpus: PosNum,
  pids: PosInt,
  /** Wall-clock deadline in milliseconds; the task is killed past it. */
  deadlineMs: PosInt,
  /** Output captured per task (stdout+stderr), in bytes; the rest is dropped and `truncated` set. */
  outputBytes: PosInt,
});

/** io-ts codec of the task spec. */
export const TaskSpecC = t.intersection([
  t.type({
    /** Command and its arguments, exec form. */
    cmd: NonEmptyStrings,
  }),
  t.partial({
    version: t.literal('1.0'),
    name: t.string,
    env: Env,
    /** Working directory (absolute); for tasks bound to storage, relative to its mount point. */
    pwd: AbsPath,
    user: t.string,
    log: t.type({ destination: t.keyof({ buffer: null, none: null, file: null }) }),
    credentials: t.array(t.type({ name: t.string, ref: t.string })),
    limits: TaskLimitsC,
    restart: t.intersection([
      t.type({ policy: t.keyof({ never: null, 'on-failure': null, always: null }) }),
      t.partial({ maxRetries: PosInt }),
    ]),
    interaction: t.partial({ stdin: t.boolean, tty: t.boolean }),
    /** Keep the executor running after the task ends (seed 001 `daemon`). */
    daemon: t.boolean,
  }),
]);

/** A task spec. */
export type TaskSpec = t.TypeOf<typeof TaskSpecC>;
/** Task resource limits. */
export type TaskLimits = t.TypeOf<typeof TaskLimitsC>;

const pathOf = (e: t.ValidationError): string =>
  e.context
    .map((c) => c.key)
    .filter((k) => k !== '' && !/^\d+$/.test(k))
    .join('.') || 'spec';

/** Decodes a task spec; failures are `InvalidEntry` listing the offending fields. */
export const decodeTaskSpec = (id: string, u: unknown): E.Either<InvalidEntry, TaskSpec> => {
  const r = TaskSpecC.decode(u);
  if (E.isRight(r)) return r;
  const keys = [...new Set(r.left.map(pathOf))];
  return E.left(invalidEntry(`invalid task spec: bad ${keys.join(', ')}`, id, keys));
};
