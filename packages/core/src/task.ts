/**
 * The task spec (seed 003 + seed 001): what to run inside an executor.
 * Credentials are references (`{ name, ref }`), never values: the spec is safe to log.
 */
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import { invalidEntry, type InvalidEntry } from './errors.js';
import { isRecordLike, plainCopy, safeShow, type PlainRecord } from './safe.js';

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

/** The fields an object codec knows, or `undefined` when `c` is not an object codec. */
const fieldsOf = (c: t.Mixed): Readonly<Record<string, t.Mixed>> | undefined => {
  if (c instanceof t.InterfaceType || c instanceof t.PartialType) return c.props as Record<string, t.Mixed>;
  if (!(c instanceof t.IntersectionType)) return undefined;
  const parts = (c.types as t.Mixed[]).map(fieldsOf);
  return parts.every((p) => p !== undefined) ? Object.assign({}, ...parts) : undefined;
};

const join = (path: string, k: string): string => (path === '' ? k : `${path}.${k}`);

/**
 * Fields of plain data `u` that codec `c` does not know, as dotted paths (array indices left
 * out, like the other errors). io-ts would strip them silently; lessl refuses them, so a typo
 * (`limit` for `limits`) cannot pass for a spec without limits. Maps (`env`) take any key.
 */
const unknownFields = (c: t.Mixed, u: unknown, path = ''): string[] => {
  if (c instanceof t.RefinementType || c instanceof t.ExactType) return unknownFields(c.type as t.Mixed, u, path);
  if (c instanceof t.ArrayType)
    return Array.isArray(u) ? [...new Set(u.flatMap((x) => unknownFields(c.type as t.Mixed, x, path)))] : [];
  const fields = fieldsOf(c);
  if (fields === undefined || !isRecordLike(u)) return [];
  const r = u as PlainRecord;
  return Object.keys(r).flatMap((k) => {
    const f = Object.hasOwn(fields, k) ? fields[k] : undefined;
    return f === undefined ? [join(path, k)] : unknownFields(f, r[k], join(path, k));
  });
};

/**
 * Decodes a task spec. Never throws: failures are `InvalidEntry` listing the offending fields,
 * unknown fields included (at the top level and inside `limits`, `restart`, `interaction`,
 * `log` and credentials). The answer is a plain copy, independent of the object passed in.
 */
export const decodeTaskSpec = (id: string, u: unknown): E.Either<InvalidEntry, TaskSpec> => {
  const sid = typeof id === 'string' ? id : safeShow(id);
  const copy = plainCopy(u);
  if (E.isLeft(copy)) return E.left(invalidEntry(`invalid task spec: it ${copy.left}`, sid, ['spec']));
  const unknown = unknownFields(TaskSpecC, copy.right);
  const r = TaskSpecC.decode(copy.right);
  if (E.isRight(r) && unknown.length === 0) return r;
  const bad = E.isLeft(r) ? [...new Set(r.left.map(pathOf))] : [];
  const why = [
    ...(unknown.length > 0 ? [`unknown ${unknown.join(', ')}`] : []),
    ...(bad.length > 0 ? [`bad ${bad.join(', ')}`] : []),
  ];
  return E.left(invalidEntry(`invalid task spec: ${why.join('; ')}`, sid, [...unknown, ...bad], { unknown }));
};
