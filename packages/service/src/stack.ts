/**
 * Functions on the wire, and the stack file of `lessl up -f lessl.yml`: one definition of each.
 * `FunctionBodyC` is the body of `PUT /v1/functions/{name}`; `StackC` is the stack file, a
 * library of images (by source) and functions synced in one go. `STACK_SCHEMA` is its JSON
 * Schema, generated from `StackC`: the service publishes it at `GET /v1/schemas/stack.json` and
 * the CLI validates files with it before it sends anything. This module loads none of the
 * service's runtime (the CLI imports it as `@lessl/service/stack`).
 */
import * as t from 'io-ts';
import { annotate, describe, int, list, refine, str, strict, toJsonSchema, type JsonSchema } from './codec.js';
import { AbsPathC, EnvC, ImageRefC, LimitsC } from './spec.js';
import { ImageNameC, ImageSourceC } from './sources.js';

/** The version of the stack file format this service reads. */
export const STACK_VERSION = 1;

/** A function's name: the rule of image names. */
export const FunctionNameC = describe(ImageNameC, 'a function name: lower-case letters, digits, . _ -, at most 64');

const ArgC = refine(t.string, (s) => s.length <= 65536 && !s.includes('\0'), 'Arg', { type: 'string', maxLength: 65536 });

/** The fields of a function definition (PUT body and stack file entry). */
const functionFields = {
  argv: describe(list(ArgC, 256, 1), 'the command in exec form (no shell): the program and its arguments'),
  cmd: describe(str(65536, 1), 'one shell command, run with /bin/sh -c'),
  env: EnvC,
  pwd: AbsPathC,
  user: describe(str(64, 1), 'the user (name or uid[:gid]) the process runs as'),
  limits: describe(LimitsC, 'per invocation: memory, cpus, pids, timeout (seconds), output (bytes kept per stream)'),
  network: describe(str(64, 1), 'none (default); others only where the operator allows them'),
  reuse: describe(
    t.keyof({ 'per-invocation': null, 'per-function': null }),
    'per-invocation (default: a fresh container per call) or per-function (calls share its containers; /tmp may persist)',
  ),
  concurrency: describe(int(1, 64), 'invocations one container runs at once (per-function; default 1)'),
  min_containers: describe(int(0, 64), 'containers kept ready while the function is in use (default 0)'),
  max_containers: describe(int(1, 64), 'most containers at once (default 4)'),
  idle_seconds: describe(int(1, 86400), 'not invoked this long, its containers are removed (default 300)'),
  public: describe(t.boolean, 'every user may read and invoke it (admins only)'),
  description: describe(str(1024), 'free text'),
};

/** What the service fills in for fields a function body leaves out. */
export const FUNCTION_DEFAULTS = {
  network: 'none',
  reuse: 'per-invocation',
  concurrency: 1,
  min_containers: 0,
  max_containers: 4,
  idle_seconds: 300,
  public: false,
} as const;

/** The body of `PUT /v1/functions/{name}`: exactly one of `argv` or `cmd`. */
export const FunctionBodyC = describe(
  refine(
    strict('FunctionBody', { image: ImageRefC }, functionFields),
    (b) =>
      (b.argv === undefined) !== (b.cmd === undefined) &&
      (b.min_containers ?? 0) <= (b.max_containers ?? FUNCTION_DEFAULTS.max_containers),
    'exactly one of argv or cmd, and min_containers <= max_containers',
    { anyOf: [{ required: ['argv'] }, { required: ['cmd'] }], not: { required: ['argv', 'cmd'] } },
  ),
  'a function: its image, its command (argv or cmd, exactly one), its template and how calls share containers',
);
/** A function definition as given on the wire. */
export type FunctionBody = t.TypeOf<typeof FunctionBodyC>;

const Nullable = <C extends t.Mixed>(c: C) => t.union([c, t.null]);

/** A function as the API reports it: its body with defaults applied, and who owns it, which version, when. */
export const FunctionViewC = t.intersection([
  t.type({
    name: t.string,
    owner: Nullable(t.string),
    image: t.string,
    reuse: t.keyof({ 'per-invocation': null, 'per-function': null }),
    concurrency: t.number,
    min_containers: t.number,
    max_containers: t.number,
    idle_seconds: t.number,
    public: t.boolean,
    version: t.number,
    created_at: t.string,
    updated_at: t.string,
  }),
  t.partial({
    argv: t.array(t.string),
    cmd: t.string,
    env: t.record(t.string, t.string),
    pwd: t.string,
    user: t.string,
    limits: t.record(t.string, t.number),
    network: t.string,
    description: t.string,
  }),
]);
/** A function view. */
export type FunctionView = t.TypeOf<typeof FunctionViewC>;

/** An image of a stack: where it comes from (as `POST /v1/images` takes it). */
export const StackImageC = strict(
  'StackImage',
  {
    source: annotate(describe(ImageSourceC, 'where the image comes from; a relative path is the stack file’s directory’s'), {
      type: 'object',
      discriminator: { propertyName: 'type' },
    }),
  },
  { public: describe(t.boolean, 'readable by every user (admins only)') },
);
/** A stack image as written. */
export type StackImage = t.TypeOf<typeof StackImageC>;

/** A map keyed by names (the image-name rule). */
const named = <C extends t.Mixed>(c: C, what: string) =>
  describe(
    annotate(t.record(t.string, c), {
      propertyNames: { pattern: '^[a-z0-9][a-z0-9._-]{0,63}$' },
      maxProperties: 256,
    }),
    what,
  );

/** The stack file. */
export const StackC = strict(
  'Stack',
  { version: describe(t.literal(STACK_VERSION), `the stack file format: ${STACK_VERSION}`) },
  {
    images: named(StackImageC, 'images by name, made from their source when missing'),
    functions: named(
      describe(FunctionBodyC, 'a function: image names an image of this file, or one the service has'),
      'functions by name, created or updated to match',
    ),
  },
);
/** A stack file as written. */
export type Stack = t.TypeOf<typeof StackC>;

/** The JSON Schema (draft 2020-12) of the stack file. */
export const STACK_SCHEMA: JsonSchema = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  title: 'lessl stack file (lessl up -f lessl.yml)',
  ...toJsonSchema(StackC),
};

/** `GET /v1/functions`: the caller's functions and the public ones (admins: all). */
export const FunctionListC = t.type({ functions: t.array(FunctionViewC) });

/** One invocation as `GET /v1/functions/{name}/logs` lists it (no input or output bytes). */
export const InvocationViewC = t.type({
  id: t.string,
  version: t.number,
  started_at: t.string,
  duration_ms: t.number,
  exit_code: Nullable(t.number),
  reason: t.string,
  cold: t.boolean,
  stderr_tail: t.string,
});
/** An invocation of a function's log. */
export type InvocationView = t.TypeOf<typeof InvocationViewC>;

/** `GET /v1/functions/{name}/logs`: the newest invocations first. */
export const FunctionLogsC = t.type({ invocations: t.array(InvocationViewC) });

/** `GET /v1/whoami`: the caller. */
export const WhoamiC = t.type({ name: t.string, admin: t.boolean });
