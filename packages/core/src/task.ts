/**
 * The task spec: what to run inside an executor.
 * Credentials are references (`{ name, ref }`), never values: the spec is safe to log.
 */
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import { invalidEntry, type AnyError, type InvalidEntry } from './errors.js';
import { isBytes, isRecordLike, plainCopy, safeShow, type PlainRecord } from './safe.js';
import type { ElementId } from './id.js';

const PosInt = t.refinement(t.number, (n) => Number.isInteger(n) && n > 0, 'PositiveInt');
const PosNum = t.refinement(t.number, (n) => Number.isFinite(n) && n > 0, 'PositiveNumber');
const AbsPath = t.refinement(t.string, (s) => s.startsWith('/') && !s.split('/').includes('..'), 'AbsolutePath');
const NonEmptyStrings = t.refinement(
  t.array(t.string),
  (a) => a.length > 0 && a.every((s) => !s.includes('\0')),
  'NonEmptyCommand',
);
// io-ts drops (rather than rejects) record keys outside a refined domain, so check names on the whole record.
const Port = t.refinement(t.number, (n) => Number.isInteger(n) && n >= 1 && n <= 65535, 'Port');
const Ports = t.refinement(t.array(Port), (a) => new Set(a).size === a.length, 'DistinctPorts');
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
    /** Keep the executor running after the task ends (the service spec's `daemon`). */
    daemon: t.boolean,
    /**
     * TCP ports the task serves inside its executor (1-65535, distinct). While it runs,
     * `tasks.connect(id, port)` opens a connection to one of them; the executor's network stays
     * as it is (none by default): connections go through the backend, not a published port.
     */
    ports: Ports,
  }),
]);

/** A task spec. */
export type TaskSpec = t.TypeOf<typeof TaskSpecC>;
/** Task resource limits. */
export type TaskLimits = t.TypeOf<typeof TaskLimitsC>;

const pathOf = (e: t.ValidationError, prefix: string): string =>
  join(
    prefix,
    e.context
      .map((c) => c.key)
      .filter((k) => k !== '' && !/^\d+$/.test(k))
      .join('.'),
  ) || 'spec';

/** The fields an object codec knows, or `undefined` when `c` is not an object codec. */
const fieldsOf = (c: t.Mixed): Readonly<Record<string, t.Mixed>> | undefined => {
  if (c instanceof t.InterfaceType || c instanceof t.PartialType) return c.props as Record<string, t.Mixed>;
  if (!(c instanceof t.IntersectionType)) return undefined;
  const parts = (c.types as t.Mixed[]).map(fieldsOf);
  return parts.every((p) => p !== undefined) ? Object.assign({}, ...parts) : undefined;
};

const join = (path: string, k: string): string => (path === '' ? k : k === '' ? path : `${path}.${k}`);

/**
 * Fields of plain data `u` that codec `c` does not know, as dotted paths (array indices left
 * out, like the other errors). io-ts would strip them silently; lessl refuses them, so a typo
 * (`limit` for `limits`) cannot pass for a spec without limits. Maps (`env`) take any key.
 */
const unknownFields = (c: t.Mixed, u: unknown, path = ''): string[] => {
  if (c instanceof t.RefinementType || c instanceof t.ExactType) return unknownFields(c.type as t.Mixed, u, path);
  if (c instanceof t.ArrayType)
    return Array.isArray(u) ? [...new Set(u.flatMap((x) => unknownFields(c.type as t.Mixed, x, path)))] : [];
  if (c instanceof t.UnionType) {
    // the member the value is meant for: the first one that decodes it (none: the decode error says so)
    const m = (c.types as t.Mixed[]).find((x) => E.isRight(x.decode(u)));
    return m === undefined ? [] : unknownFields(m, u, path);
  }
  const fields = fieldsOf(c);
  if (fields === undefined || !isRecordLike(u)) return [];
  const r: object = u;
  return Object.keys(r).flatMap((k) => {
    const f = Object.hasOwn(fields, k) ? fields[k] : undefined;
    return f === undefined ? [join(path, k)] : unknownFields(f, Reflect.get(r, k), join(path, k));
  });
};

/**
 * Decodes `u` with an object codec exactly: fields the codec does not know are refused, not
 * stripped. Never throws: failures are `InvalidEntry` naming every offending field as a dotted
 * path under `prefix` (`options.backend.capAdd`), unknown ones also in `detail.unknown`. The
 * answer is a plain copy, independent of the object passed in.
 */
export const decodeExact = <C extends t.Mixed>(
  codec: C,
  id: string,
  u: unknown,
  what: string,
  prefix = '',
): E.Either<InvalidEntry, t.TypeOf<C>> => {
  const copy = plainCopy(u);
  if (E.isLeft(copy)) return E.left(invalidEntry(`invalid ${what}: it ${copy.left}`, id, [prefix === '' ? 'spec' : prefix]));
  const unknown = unknownFields(codec, copy.right, prefix);
  const r = codec.decode(copy.right) as t.Validation<t.TypeOf<C>>;
  if (E.isRight(r) && unknown.length === 0) return r;
  const bad = E.isLeft(r) ? [...new Set(r.left.map((e) => pathOf(e, prefix)))] : [];
  const why = [
    ...(unknown.length > 0 ? [`unknown ${unknown.join(', ')}`] : []),
    ...(bad.length > 0 ? [`bad ${bad.join(', ')}`] : []),
  ];
  return E.left(invalidEntry(`invalid ${what}: ${why.join('; ')}`, id, [...unknown, ...bad], { unknown }));
};

/** True when the spec asks for restarts (a restart policy other than `never`). */
export const restarts = (spec: TaskSpec): boolean => spec.restart !== undefined && spec.restart.policy !== 'never';

/**
 * Decodes a task spec. Never throws: failures are `InvalidEntry` listing the offending fields,
 * unknown fields included (at the top level and inside `limits`, `restart`, `interaction`,
 * `log` and credentials). A restart policy other than `never` needs `daemon: true` (a one-shot
 * task is removed when it ends: there is nothing to restart), else `InvalidEntry` naming `restart`.
 * The answer is a plain copy, independent of the object passed in.
 */
export const decodeTaskSpec = (id: string, u: unknown): E.Either<InvalidEntry, TaskSpec> => {
  const sid = typeof id === 'string' ? id : safeShow(id);
  const r = decodeExact(TaskSpecC, sid, u, 'task spec');
  if (E.isRight(r) && restarts(r.right) && r.right.daemon !== true)
    return E.left(
      invalidEntry(
        `invalid task spec: restart policy ${r.right.restart?.policy ?? ''} needs daemon: true (a one-shot task is not restarted)`,
        sid,
        ['restart'],
      ),
    );
  return r;
};

/**
 * io-ts codec of `ExecutorOptions`, with `backend` decoded by the backend's own codec (each
 * backend documents its options; one that takes none answers `t.type({})`).
 */
export const executorOptionsCodec = <B extends t.Mixed>(backend: B) =>
  t.partial({
    readOnlyRootfs: t.boolean,
    network: t.string,
    memoryBytes: PosInt,
    cpus: PosNum,
    pids: PosInt,
    backend,
  });

/**
 * Decodes executor options exactly (unknown fields, at the top level and in `backend`, are
 * `InvalidEntry` naming them as `options.<field>`). Never throws.
 */
export const decodeExecutorOptions = <B extends t.Mixed>(
  id: string,
  u: unknown,
  backend: B,
): E.Either<InvalidEntry, t.TypeOf<ReturnType<typeof executorOptionsCodec<B>>>> =>
  decodeExact(executorOptionsCodec(backend), id, u ?? {}, 'executor options', 'options');

const Bytes = new t.Type<Uint8Array, Uint8Array, unknown>(
  'Uint8Array',
  isBytes,
  (u, c) => (isBytes(u) ? t.success(u) : t.failure(u, c)),
  t.identity,
);

/** What a credential resolver answers: environment variables and files (absolute paths) for the task. */
export const CredentialValueC = t.partial({
  env: Env,
  files: t.refinement(
    t.record(t.string, t.union([t.string, Bytes])),
    (r) =>
      Object.keys(r).every((k) => k.startsWith('/') && !k.endsWith('/') && !k.split('/').includes('..') && !k.includes('\0')),
    'Files',
  ),
});
/** The secret material of one credential; lessl hands it to the task only. */
export type CredentialValue = t.TypeOf<typeof CredentialValueC>;

/** What a resolver is told about the credential it resolves. */
export interface CredentialContext {
  /** The credential's `name` in the spec. */
  readonly name: string;
  readonly task: ElementId;
  readonly executor: ElementId;
}

/**
 * Resolves a credential reference (`spec.credentials[i].ref`) into secret material, when a task
 * starts. Given to a backend when it is opened (`credentials` option). The answer goes into the
 * task's environment and files only: never into the registry, events, labels or messages.
 */
export type CredentialResolver = (
  ref: string,
  ctx: CredentialContext,
) => Promise<CredentialValue> | TaskEither<AnyError, CredentialValue>;

/** An io-ts codec of functions (options that take callbacks): `typeof u === 'function'`. */
export const fnC = <F>(name: string): t.Type<F, F, unknown> =>
  new t.Type<F, F, unknown>(
    name,
    (u): u is F => typeof u === 'function',
    (u, c) => (typeof u === 'function' ? t.success(u as F) : t.failure(u, c)),
    t.identity,
  );

/** An io-ts codec of instances of a class (never throws, even for a Proxy with a trapping prototype). */
export const instanceC = <A>(name: string, cls: { readonly prototype: A }): t.Type<A, A, unknown> => {
  const is = (u: unknown): u is A => {
    try {
      return u instanceof (cls as unknown as abstract new () => A);
    } catch {
      return false;
    }
  };
  return new t.Type<A, A, unknown>(name, is, (u, c) => (is(u) ? t.success(u) : t.failure(u, c)), t.identity);
};

/** Where an options object belongs, for the errors `decodeOptions` answers. */
export interface OptionsPlace {
  /** The ID the call is about (the error's `id`; default ''). */
  readonly id?: string;
  /** The path of the object in the call's arguments, prefixed to the keys named (`volumes[0]`). */
  readonly prefix?: string;
}

/**
 * Decodes an options object exactly (an open function's, a call's options or context: values
 * may be functions, signals or class instances, so it is not deep-copied): its own top-level
 * properties are read once, unknown keys (there and inside plain nested objects) and wrong
 * types are `InvalidEntry` naming them (`detail.unknown` lists the unknown ones). Never throws.
 * @example decodeOptions({ ifRevision: t.number }, { ifRevison: 3 }, 'update options') // Left: keys ['ifRevison']
 */
export const decodeOptions = <P extends t.Props>(
  props: P,
  u: unknown,
  what: string,
  at: OptionsPlace = {},
): E.Either<InvalidEntry, t.TypeOf<t.PartialC<P>>> => {
  const id = at.id ?? '';
  const prefix = at.prefix ?? '';
  if (u === undefined) return E.right({});
  const unreadable = E.left(
    invalidEntry(`invalid ${what}: it could not be read (a getter or Proxy trap threw)`, id, [prefix || 'options']),
  );
  if (!isRecordLike(u)) return E.left(invalidEntry(`invalid ${what}: must be an object`, id, [prefix || 'options']));
  const copy = ownCopy(u, Object.keys(props));
  if (copy === undefined) return unreadable;
  const codec = t.partial(props);
  let unknown: string[];
  let r: t.Validation<t.TypeOf<t.PartialC<P>>>;
  try {
    unknown = unknownFields(codec, copy, prefix);
    r = codec.decode(copy);
  } catch {
    return unreadable;
  }
  if (E.isRight(r) && unknown.length === 0) return E.right(r.right);
  const bad = E.isLeft(r) ? [...new Set(r.left.map((e) => pathOf(e, prefix)))] : [];
  const why = [
    ...(unknown.length > 0 ? [`unknown ${unknown.join(', ')}`] : []),
    ...(bad.length > 0 ? [`bad ${bad.join(', ')}`] : []),
  ];
  return E.left(invalidEntry(`invalid ${what}: ${why.join('; ')}`, id, [...unknown, ...bad], { unknown }));
};

/**
 * The own enumerable properties of `u`, and the `known` ones it inherits (a class instance's
 * getters), each read once into own data properties; `undefined` if reading threw.
 */
const ownCopy = (u: object, known: readonly string[]): PlainRecord | undefined => {
  const copy: PlainRecord = {};
  const put = (k: string, v: unknown): void => {
    Object.defineProperty(copy, k, { value: v, enumerable: true, writable: true });
  };
  try {
    for (const k of Object.keys(u)) put(k, Reflect.get(u, k));
    for (const k of known) {
      if (Object.hasOwn(copy, k)) continue;
      const v: unknown = Reflect.get(u, k);
      if (v !== undefined) put(k, v);
    }
  } catch {
    return undefined;
  }
  return copy;
};
