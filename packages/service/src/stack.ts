/**
 * The stack file of `lessl up -f lessl.yml`: `StackC`, a library of images (by source) and
 * functions (as `PUT /v1/functions/{name}` takes them, function-wire.ts) synced in one go. `STACK_SCHEMA` is its JSON
 * Schema, generated from `StackC`: the service publishes it at `GET /v1/schemas/stack.json` and
 * the CLI validates files with it before it sends anything. This module loads none of the
 * service's runtime (the CLI imports it as `@lessl/service/stack`).
 */
import * as t from 'io-ts';
import { FUNCTION_DEFAULTS as SDK_DEFAULTS } from '@lessl/kit';
import { annotate, describe, refine, strict, toJsonSchema, type JsonSchema } from './codec.js';
import { FunctionBodyC } from './function-wire.js';
import { ImageSourceC } from './sources.js';

export * from './function-wire.js';

/** The version of the stack file format this service reads. */
export const STACK_VERSION = 1;

/** What the service fills in for fields a function body leaves out. */
export const FUNCTION_DEFAULTS = {
  network: 'none',
  reuse: SDK_DEFAULTS.reuse,
  concurrency: SDK_DEFAULTS.concurrency,
  min_containers: SDK_DEFAULTS.minContainers,
  max_containers: SDK_DEFAULTS.maxContainers,
  idle_seconds: SDK_DEFAULTS.idleMs / 1000,
  public: false,
} as const;

/** A function of a stack: the body of `PUT /v1/functions/{name}`, with exactly one of `argv` or `cmd`. */
const StackFunctionC = describe(
  refine(
    FunctionBodyC,
    (b) =>
      (b.argv === undefined) !== (b.cmd === undefined) &&
      (b.min_containers ?? 0) <= (b.max_containers ?? FUNCTION_DEFAULTS.max_containers),
    'exactly one of argv or cmd, and min_containers <= max_containers',
    { anyOf: [{ required: ['argv'] }, { required: ['cmd'] }], not: { required: ['argv', 'cmd'] } },
  ),
  'a function, as PUT /v1/functions/{name} takes it: image names an image of this file, or one the service has',
);

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
    functions: named(StackFunctionC, 'functions by name, created or updated to match'),
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

/** `GET /v1/whoami`: the caller. */
export const WhoamiC = t.type({ name: t.string, admin: t.boolean });
