/**
 * One definition per wire shape: io-ts codecs that validate requests AND generate the JSON
 * schemas of the OpenAPI document (`toJsonSchema`). Objects are strict (unknown fields are
 * refused, not stripped), refinements carry their JSON-schema form through `annotate`.
 */
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import { invalidEntry, type InvalidEntry } from '@lessl/core';

/** A JSON schema (draft 2020-12, as OpenAPI 3.1 has it). */
export type JsonSchema = { readonly [k: string]: JsonValue };
/** A JSON value. */
export type JsonValue = string | number | boolean | null | readonly JsonValue[] | { readonly [k: string]: JsonValue };

const annotations = new WeakMap<t.Mixed, JsonSchema>();

/** Attaches the JSON-schema form (and description) of a codec, for refinements and custom codecs. */
export const annotate = <C extends t.Mixed>(c: C, schema: JsonSchema): C => {
  annotations.set(c, { ...(annotations.get(c) ?? {}), ...schema });
  return c;
};

/**
 * A documented codec: `describe(c, 'what it is')`, a codec of its own with `c`'s schema and the
 * description (a shared codec such as `t.boolean` keeps no description of one of its uses).
 */
export const describe = <C extends t.Mixed>(c: C, description: string): t.Type<t.TypeOf<C>, t.OutputOf<C>, unknown> =>
  annotate(new t.Type<t.TypeOf<C>, t.OutputOf<C>, unknown>(c.name, c.is, c.validate, c.encode), {
    ...toJsonSchema(c),
    description,
  });

type Props = Record<string, t.Mixed>;
type StrictOf<R extends Props, O extends Props> = t.TypeOf<t.TypeC<R>> & Partial<t.TypeOf<t.TypeC<O>>>;

/** An object codec with required and optional fields that refuses fields it does not know. */
export class StrictType<R extends Props, O extends Props> extends t.Type<StrictOf<R, O>, StrictOf<R, O>, unknown> {
  readonly _tag = 'StrictType' as const;
  constructor(
    name: string,
    readonly required: R,
    readonly optional: O,
  ) {
    const all: Props = { ...required, ...optional };
    super(
      name,
      (u): u is StrictOf<R, O> => E.isRight(this.validate(u, [])),
      (u, c) => {
        if (typeof u !== 'object' || u === null || Array.isArray(u)) return t.failure(u, c, 'expected an object');
        const rec: Readonly<Record<string, unknown>> = Object.fromEntries(Object.entries(u));
        const errors: t.Errors = [];
        const out: Record<string, unknown> = {};
        for (const k of Object.keys(rec))
          if (!Object.hasOwn(all, k))
            errors.push({ value: rec[k], context: [...c, { key: k, type: t.never, actual: rec[k] }], message: 'unknown field' });
        for (const [k, codec] of Object.entries(all)) {
          const v = Object.hasOwn(rec, k) ? rec[k] : undefined;
          if (v === undefined) {
            if (Object.hasOwn(required, k))
              errors.push({ value: v, context: [...c, { key: k, type: codec, actual: v }], message: 'required' });
            continue;
          }
          const r = codec.validate(v, [...c, { key: k, type: codec, actual: v }]);
          if (E.isLeft(r)) errors.push(...r.left);
          else out[k] = r.right;
        }
        return errors.length > 0 ? t.failures(errors) : t.success(out as StrictOf<R, O>);
      },
      t.identity,
    );
  }
}

/** A strict object codec: `strict('Name', { required }, { optional })`. */
export function strict<R extends Props>(name: string, required: R): StrictType<R, {}>;
export function strict<R extends Props, O extends Props>(name: string, required: R, optional: O): StrictType<R, O>;
export function strict(name: string, required: Props, optional: Props = {}): StrictType<Props, Props> {
  return new StrictType(name, required, optional);
}

/** A refined codec with its JSON-schema form. */
export const refine = <C extends t.Mixed>(c: C, pred: (a: t.TypeOf<C>) => boolean, name: string, schema: JsonSchema) =>
  annotate(t.refinement(c, pred, name), schema);

/** Strings of bounded length. */
export const str = (max: number, min = 0, extra: JsonSchema = {}) =>
  refine(t.string, (s) => s.length >= min && s.length <= max, `string(${min}..${max})`, {
    type: 'string',
    ...(min > 0 ? { minLength: min } : {}),
    maxLength: max,
    ...extra,
  });

/** Integers in a range. */
export const int = (min: number, max: number) =>
  refine(t.number, (n) => Number.isInteger(n) && n >= min && n <= max, `integer(${min}..${max})`, {
    type: 'integer',
    minimum: min,
    maximum: max,
  });

/** Bounded arrays. */
export const list = <C extends t.Mixed>(c: C, max: number, min = 0) =>
  refine(t.array(c), (a) => a.length >= min && a.length <= max, `array(${min}..${max})`, {
    type: 'array',
    items: toJsonSchema(c),
    ...(min > 0 ? { minItems: min } : {}),
    maxItems: max,
  });

/** An integer carried as a decimal string (query parameters). */
export const IntFromString = (min: number, max: number) =>
  annotate(
    new t.Type<number, string, unknown>(
      `IntFromString(${min}..${max})`,
      (u): u is number => typeof u === 'number' && Number.isInteger(u) && u >= min && u <= max,
      (u, c) => {
        const n = typeof u === 'string' && /^-?\d{1,15}$/.test(u) ? Number(u) : Number.NaN;
        return Number.isInteger(n) && n >= min && n <= max ? t.success(n) : t.failure(u, c, `an integer in ${min}..${max}`);
      },
      String,
    ),
    { type: 'integer', minimum: min, maximum: max },
  );

/** A boolean carried as `true`/`false` (query parameters). */
export const BoolFromString = annotate(
  new t.Type<boolean, string, unknown>(
    'BoolFromString',
    (u): u is boolean => typeof u === 'boolean',
    (u, c) => (u === 'true' || u === '1' ? t.success(true) : u === 'false' || u === '0' ? t.success(false) : t.failure(u, c)),
    String,
  ),
  { type: 'boolean' },
);

/** The JSON schema of a codec (the subset of io-ts the service uses). */
export const toJsonSchema = (c: t.Mixed): JsonSchema => {
  const a = annotations.get(c);
  const complete = a !== undefined && ['type', 'oneOf', 'const', 'enum'].some((k) => Object.hasOwn(a, k));
  return complete ? a : { ...base(c), ...(a ?? {}) };
};

/** A codec held by another (io-ts types their parts loosely): checked to be one. */
const codecOf = (u: unknown): t.Mixed => {
  if (u instanceof t.Type) return u;
  throw new TypeError('toJsonSchema: a part of the codec is not a codec');
};

/** The codecs of an object codec's fields. */
const propsOf = (u: unknown): Record<string, t.Mixed> =>
  typeof u === 'object' && u !== null ? Object.fromEntries(Object.entries(u).map(([k, v]) => [k, codecOf(v)])) : {};

/** The JSON schema of an object's fields. */
const propertiesOf = (fields: Record<string, t.Mixed>): Record<string, JsonSchema> =>
  Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, toJsonSchema(v)]));

/** The schema of a literal's value. */
const constOf = (v: unknown): JsonSchema =>
  typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' ? { const: v } : {};

/** The schema of an object codec: strict (no other fields), or io-ts's type or partial. */
const objectSchema = (c: t.Mixed): JsonSchema | undefined => {
  if (c instanceof StrictType) {
    const required = Object.keys(propsOf(c.required));
    const props = propertiesOf({ ...propsOf(c.required), ...propsOf(c.optional) });
    return { type: 'object', properties: props, ...(required.length > 0 ? { required } : {}), additionalProperties: false };
  }
  if (c instanceof t.InterfaceType || c instanceof t.PartialType) {
    const fields = propsOf(c.props);
    return {
      type: 'object',
      properties: propertiesOf(fields),
      ...(c instanceof t.InterfaceType ? { required: Object.keys(fields) } : {}),
    };
  }
  return undefined;
};

const base = (c: t.Mixed): JsonSchema => {
  const obj = objectSchema(c);
  if (obj !== undefined) return obj;
  if (c instanceof t.RefinementType) return toJsonSchema(codecOf(c.type));
  if (c instanceof t.StringType) return { type: 'string' };
  if (c instanceof t.NumberType) return { type: 'number' };
  if (c instanceof t.BooleanType) return { type: 'boolean' };
  if (c instanceof t.NullType) return { type: 'null' };
  if (c instanceof t.UnknownType) return {};
  if (c instanceof t.LiteralType) return constOf(c.value);
  if (c instanceof t.KeyofType) return { type: 'string', enum: Object.keys(propsOrKeys(c.keys)) };
  if (c instanceof t.ArrayType) return { type: 'array', items: toJsonSchema(codecOf(c.type)) };
  if (c instanceof t.DictionaryType) return { type: 'object', additionalProperties: toJsonSchema(codecOf(c.codomain)) };
  if (c instanceof t.UnionType) {
    const types: unknown = c.types;
    return { oneOf: (Array.isArray(types) ? types : []).map((x) => toJsonSchema(codecOf(x))) };
  }
  return {};
};

/** The keys of a keyof codec. */
const propsOrKeys = (u: unknown): object => (typeof u === 'object' && u !== null ? u : {});

const pathOf = (e: t.ValidationError): string =>
  e.context
    .map((x) => x.key)
    .filter((k) => k !== '')
    .join('.');

/**
 * Decodes `u` with `c`. Never throws: failures are `InvalidEntry` naming each offending field
 * (dotted paths, array indices included) and why.
 */
export const decodeWith = <A>(c: t.Decoder<unknown, A>, u: unknown, what: string): E.Either<InvalidEntry, A> => {
  let r: t.Validation<A>;
  try {
    r = c.decode(u);
  } catch {
    return E.left(invalidEntry(`invalid ${what}`, '', [what]));
  }
  if (E.isRight(r)) return r;
  const reasons = [
    ...new Set(r.left.map((e) => `${pathOf(e) || what}: ${e.message ?? `expected ${e.context.at(-1)?.type.name ?? 'a value'}`}`)),
  ].slice(0, 20);
  const keys = [...new Set(r.left.map((e) => pathOf(e) || what))].slice(0, 20);
  return E.left(invalidEntry(`invalid ${what}: ${reasons.join('; ')}`, '', keys, { reasons }));
};
