/**
 * Functions on the wire: the body of `PUT /v1/functions/{name}`, the views the function routes
 * answer, an invocation job's result. One definition, used by the routes (functions.ts,
 * api/functions.ts) and by the stack file (stack.ts); it loads none of the service's runtime, so
 * the CLI can import it.
 */
import * as t from 'io-ts';
import { describe, int, list, refine, str, strict } from './codec.js';
import { ImageNameC } from './sources.js';
import { AbsPathC, CommandC, EnvC, ImageRefC, LimitsC } from './spec.js';

/** Path parameters `{name}` of the function routes (the image name rule). */
export const FunctionParamsC = strict('FunctionParams', { name: ImageNameC });

const ArgC = refine(t.string, (s) => s.length <= 65536 && !s.includes('\0'), 'Arg', { type: 'string', maxLength: 65536 });
const ReuseC = describe(
  t.keyof({ 'per-invocation': null, 'per-function': null }),
  'per-invocation (default): a container of its own per invocation; per-function: invocations of this function share its containers (/tmp may persist between them)',
);

/** The body of `PUT /v1/functions/{name}`. */
export const FunctionBodyC = strict(
  'FunctionBody',
  { image: ImageRefC },
  {
    argv: describe(list(ArgC, 256, 1), 'the command and its arguments, exec form (no shell); exactly one of argv and cmd'),
    cmd: describe(CommandC, 'one shell command, run with /bin/sh -c; exactly one of argv and cmd'),
    env: EnvC,
    pwd: describe(AbsPathC, 'the working directory'),
    user: describe(str(64, 1), 'the user (name or uid[:gid]) the process runs as'),
    limits: describe(LimitsC, 'memory, cpus, pids; timeout: seconds per invocation; output: bytes kept per stream'),
    network: describe(str(64, 1), 'none (default); others only where the operator allows them'),
    reuse: ReuseC,
    concurrency: describe(int(1, 64), 'invocations one container runs at once (per-function; default 1)'),
    min_containers: describe(int(0, 64), 'containers kept ready (default 0)'),
    max_containers: describe(int(1, 64), 'most containers at once (default 4); more invocations wait'),
    idle_seconds: describe(int(1, 86400), 'not invoked this long, its containers go (default 300)'),
    public: describe(t.boolean, 'every user may read and invoke it (admins only)'),
    description: str(1024),
  },
);
/** A function definition as given on the wire. */
export type FunctionBody = t.TypeOf<typeof FunctionBodyC>;

const FunctionLimitsC = strict('FunctionLimits', {
  memory: t.number,
  cpus: t.number,
  pids: t.number,
  timeout: t.number,
  output: t.number,
});

/** A function as the API shows it: the body's fields with defaults applied, its owner and version. */
export const FunctionViewC = strict(
  'FunctionView',
  {
    name: t.string,
    owner: t.string,
    version: t.number,
    created_at: t.string,
    updated_at: t.string,
    image: t.string,
    env: t.record(t.string, t.string),
    limits: FunctionLimitsC,
    network: t.string,
    reuse: ReuseC,
    concurrency: t.number,
    min_containers: t.number,
    max_containers: t.number,
    idle_seconds: t.number,
    public: t.boolean,
  },
  { argv: t.array(t.string), cmd: t.string, pwd: t.string, user: t.string, description: t.string },
);
/** A function view. */
export type FunctionView = t.TypeOf<typeof FunctionViewC>;

/** The list of `GET /v1/functions`. */
export const FunctionListC = strict('FunctionList', { functions: t.array(FunctionViewC) });

/** One invocation of a function's log, as the API shows it. */
export const InvocationLogC = strict('FunctionLogs', {
  invocations: t.array(
    strict('InvocationLog', {
      id: t.string,
      version: t.number,
      started_at: t.string,
      duration_ms: t.number,
      exit_code: t.union([t.number, t.null]),
      reason: t.string,
      cold: t.boolean,
      stderr_tail: t.string,
    }),
  ),
});

/** The result of an invocation job, as the jobs API shows it (stdout and stderr as text, or base64 when not UTF-8). */
export const InvocationResultC = strict('InvocationResult', {
  invocation: t.string,
  version: t.number,
  exit_code: t.union([t.number, t.null]),
  reason: t.string,
  duration_ms: t.number,
  cold: t.boolean,
  truncated: t.boolean,
  encoding: t.keyof({ utf8: null, base64: null }),
  stdout: t.string,
  stderr: t.string,
});
