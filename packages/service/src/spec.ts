/**
 * The seed-001 task spec v1.0, the wire format of `POST /v1/tasks` (one object, or an array of
 * them: a batch), and the other request bodies and queries. These codecs validate requests and
 * generate the OpenAPI schemas (see `codec.ts`): one definition, never written twice.
 */
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import { invalidEntry, type InvalidEntry } from '@lessl/core';
import { BoolFromString, describe, IntFromString, int, list, refine, str, strict } from './codec.js';

const NAME = /^[A-Za-z0-9_][A-Za-z0-9._\-/:@]{0,200}$/;

/** An absolute path without `..` segments or NUL. */
export const AbsPathC = describe(
  refine(
    t.string,
    (s) => s.length <= 1024 && s.startsWith('/') && !s.split('/').includes('..') && !s.includes('\0'),
    'AbsolutePath',
    { type: 'string', pattern: '^/', maxLength: 1024 },
  ),
  'an absolute path (no .. segments)',
);

/** An image: a name in the service's image store (`busybox`, `my_python_image:1`) or a lessl ID `image://<store>/<name>`. */
export const ImageRefC = describe(
  refine(
    t.string,
    (s) => NAME.test(s) || /^image:\/\/[a-z0-9][a-z0-9._-]{0,62}\/[A-Za-z0-9_][A-Za-z0-9._\-/:@]{0,200}$/.test(s),
    'Image',
    {
      type: 'string',
      minLength: 1,
      maxLength: 280,
    },
  ),
  'an image name in the service store, or an image ID image://<store>/<name>',
);

/** Resource limits of a task (service defaults fill what is absent; per-user maxima bound them). */
export const LimitsC = strict(
  'Limits',
  {},
  {
    memory: describe(int(4 << 20, 2 ** 40), 'memory in bytes'),
    cpus: describe(
      refine(t.number, (n) => Number.isFinite(n) && n > 0 && n <= 256, 'Cpus', {
        type: 'number',
        exclusiveMinimum: 0,
        maximum: 256,
      }),
      'CPUs (fractions allowed)',
    ),
    pids: describe(int(1, 1 << 20), 'maximum number of processes'),
    timeout: describe(int(1, 7 * 86400), 'seconds each command may run before it is killed'),
    output: describe(int(1, 1 << 30), 'bytes of output kept per command (the rest is dropped, `truncated` is set)'),
  },
);
/** Task limits as given on the wire. */
export type Limits = t.TypeOf<typeof LimitsC>;

const validUrl = (s: string): boolean => {
  try {
    const u = new URL(s);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '';
  } catch {
    return false;
  }
};

/** A resource: a file given inline (`data`), fetched (`src`), or a named volume of the caller's mounted (`mnt`). */
export const ResourceC = describe(
  refine(
    strict(
      'Resource',
      {},
      {
        content_type: describe(str(255), 'the MIME type; text types carry `data` as text, others as base64'),
        data: describe(str(16 << 20), 'the content: text, or base64 for binary types'),
        src: describe(
          refine(str(2048), validUrl, 'HttpUrl', { type: 'string', format: 'uri', pattern: '^https?://', maxLength: 2048 }),
          'an http or https URL the service fetches (size and time limited); the file takes its last path segment as name',
        ),
        dest: describe(AbsPathC, 'with data: the file path; with src: the directory (default pwd); with mnt: the mount point'),
        mnt: describe(
          refine(t.string, (s) => /^[A-Za-z0-9_][A-Za-z0-9._-]{0,62}$/.test(s), 'VolumeName', {
            type: 'string',
            pattern: '^[A-Za-z0-9_][A-Za-z0-9._-]{0,62}$',
          }),
          'a named volume of the caller to mount at dest',
        ),
      },
    ),
    (r) =>
      [r.data, r.src, r.mnt].filter((x) => x !== undefined).length === 1 &&
      (r.src !== undefined || r.dest !== undefined) &&
      (r.data === undefined || !r.dest?.endsWith('/')),
    'one of data, src or mnt (dest required with data and mnt, and a file path with data)',
    {},
  ),
  'a resource',
);
/** A resource as given on the wire. */
export type Resource = t.TypeOf<typeof ResourceC>;

/** Environment variables: names as the shell takes them, at most 256. */
export const EnvC = describe(
  refine(
    t.record(t.string, t.string),
    (r) =>
      Object.keys(r).length <= 256 &&
      Object.entries(r).every(([k, v]) => /^[A-Za-z_][A-Za-z0-9_]{0,127}$/.test(k) && v.length <= 32768 && !v.includes('\0')),
    'Env',
    {
      type: 'object',
      propertyNames: { pattern: '^[A-Za-z_][A-Za-z0-9_]{0,127}$' },
      additionalProperties: { type: 'string', maxLength: 32768 },
      maxProperties: 256,
    },
  ),
  'environment variables',
);

/** One shell command (no NUL, at most 64 KiB). */
export const CommandC = refine(t.string, (s) => s.length > 0 && s.length <= 65536 && !s.includes('\0'), 'Command', {
  type: 'string',
  minLength: 1,
  maxLength: 65536,
});
const CommandsC = describe(
  list(CommandC, 64),
  'shell commands, each run with /bin/sh -c in order; the first failure stops the rest',
);

/** The most ports one task may declare. */
export const MAX_PORTS = 16;
/** TCP ports a task serves: distinct integers 1-65535, at most `MAX_PORTS`. */
export const PortsC = describe(
  refine(list(int(1, 65535), MAX_PORTS), (a) => new Set(a).size === a.length, 'Ports', {
    type: 'array',
    items: { type: 'integer', minimum: 1, maximum: 65535 },
    maxItems: MAX_PORTS,
    uniqueItems: true,
  }),
  'TCP ports the task serves inside its container (distinct, 1-65535, at most 16): reached through the proxy at /v1/tasks/{id}/ports/{port}/ and shared routes /r/{route}/',
);

/** The seed-001 task spec v1.0. */
export const TaskSpecC = describe(
  refine(
    strict(
      'TaskSpec',
      { image: ImageRefC },
      {
        version: describe(
          refine(t.union([t.number, t.string]), (v) => v === 1 || v === '1.0' || v === '1', 'Version', {
            oneOf: [{ const: 1 }, { const: '1.0' }, { const: '1' }],
          }),
          'the task spec version: 1.0',
        ),
        daemon: describe(t.boolean, 'keep the container running after the commands (exec more with PUT)'),
        ttl: describe(int(1, 365 * 86400), 'seconds until the container (and the results) are removed'),
        resources: describe(list(ResourceC, 32), 'files put into the container, and volumes mounted'),
        task_name: describe(str(128), 'a human-readable name'),
        pwd: describe(AbsPathC, 'the working directory of the commands'),
        env: EnvC,
        cmd: CommandsC,
        limits: LimitsC,
        ports: PortsC,
        network: describe(str(64, 1), 'the network mode: none (default); others only where the operator allows them'),
        stdin: describe(
          str(16 << 20),
          'input for the first command: text, written to its stdin as UTF-8 (the other commands read an empty stdin)',
        ),
        stdin_base64: describe(str(22 << 20), 'input for the first command as base64, for binary input (instead of stdin)'),
      },
    ),
    (s) => s.daemon === true || (s.cmd?.length ?? 0) > 0,
    'cmd (at least one command) unless daemon',
    {},
  ),
  'a seed-001 task spec',
);
/** A task spec as given on the wire. */
export type TaskSpecV1 = t.TypeOf<typeof TaskSpecC>;

/** The largest batch one POST may carry. */
export const MAX_BATCH = 16;
/** A batch of task specs. */
export const TaskBatchC = list(TaskSpecC, MAX_BATCH, 1);
/** The body of `POST /v1/tasks`: one spec, or a batch. Decode with `decodeTaskBody`. */
export const TaskBodyC = describe(t.union([TaskSpecC, TaskBatchC]), 'one task spec, or an array of them (a batch)');

/** The body of `PUT /v1/tasks/{id}`: more commands for a running daemon task. */
export const ExecBodyC = strict(
  'Exec',
  { cmd: describe(list(CommandC, 64, 1), 'shell commands run in order with /bin/sh -c') },
  {
    env: EnvC,
    pwd: AbsPathC,
    start: describe(
      t.boolean,
      'if the daemon is not running (it ended, was killed or expired), create its container again from its stored spec first',
    ),
  },
);
/** An exec request as given on the wire. */
export type ExecBody = t.TypeOf<typeof ExecBodyC>;

/** The body of `POST /v1/users`. */
export const NewUserC = strict(
  'NewUser',
  {
    name: describe(
      refine(t.string, (s) => /^[a-z][a-z0-9_-]{0,31}$/.test(s), 'UserName', {
        type: 'string',
        pattern: '^[a-z][a-z0-9_-]{0,31}$',
      }),
      'the user name',
    ),
  },
  { admin: t.boolean, maxima: describe(LimitsC, 'per-user maxima (default: the operator maxima)') },
);
/** A new user as given on the wire. */
export type NewUser = t.TypeOf<typeof NewUserC>;

/** Query of `POST /v1/tasks`. */
export const SubmitQueryC = strict(
  'SubmitQuery',
  {},
  { wait: describe(IntFromString(0, 300), 'seconds to wait for the task to end: 201 with it when it does') },
);
/** Task states as the API reports them (the keys of the codec of `?state=`). */
const TASK_STATE_KEYS = {
  queued: null,
  running: null,
  exited: null,
  failed: null,
  killed: null,
  cancelled: null,
  expired: null,
  lost: null,
} as const;
/** Task states as the API reports them. */
export const TASK_STATES = ['queued', 'running', 'exited', 'failed', 'killed', 'cancelled', 'expired', 'lost'] as const;
/** A task's state. */
export type TaskState = (typeof TASK_STATES)[number];
const _sameStates: Readonly<Record<TaskState, null>> = TASK_STATE_KEYS;
void _sameStates;
/** Query of `GET /v1/tasks`. */
export const ListQueryC = strict(
  'ListQuery',
  {},
  {
    state: t.keyof(TASK_STATE_KEYS),
    job: str(64, 1),
    name: str(128, 1),
    limit: describe(IntFromString(1, 500), 'page size (default 50)'),
    cursor: describe(str(128, 1), 'the `next` of the previous page'),
  },
);
/** Query of `GET /v1/tasks/{id}/logs`. */
export const LogsQueryC = strict(
  'LogsQuery',
  {},
  { follow: describe(BoolFromString, 'stream until the task ends'), since: IntFromString(0, Number.MAX_SAFE_INTEGER) },
);
/** Query of `GET /v1/events`. */
export const EventsQueryC = strict(
  'EventsQuery',
  {},
  { since: describe(str(64, 1), 'replay events after this event id (as Last-Event-ID does); 0: from the start') },
);
/** The ID of a task or job (`t_…`, `j_…`). */
export const ResourceIdC = refine(t.string, (s) => /^[a-z]_[a-z0-9]{4,40}$/.test(s), 'ResourceId', {
  type: 'string',
  pattern: '^[a-z]_[a-z0-9]{4,40}$',
});
/** Path parameters `{id}`. */
export const IdParamsC = strict('IdParams', { id: ResourceIdC });

/** Decodes `u` as a spec or a batch, answering the list of specs. */
export const decodeTaskBody = (
  u: unknown,
  decode: <A>(c: t.Decoder<unknown, A>, u: unknown, what: string) => E.Either<InvalidEntry, A>,
): E.Either<InvalidEntry, readonly TaskSpecV1[]> =>
  Array.isArray(u)
    ? decode(TaskBatchC, u, 'batch')
    : typeof u === 'object' && u !== null
      ? E.map((s: TaskSpecV1) => [s])(decode(TaskSpecC, u, 'spec'))
      : E.left(invalidEntry('the body must be a task spec (an object) or a batch (an array of them)', '', ['body']));
