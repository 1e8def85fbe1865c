/**
 * The element record every store answers, with its io-ts codec (the single source of truth)
 * and the JSON wire codec used by the registry and the HTTP service.
 */
import * as t from 'io-ts';
import { ElementIdC } from './id.js';
import { isBytes } from './safe.js';

/** io-ts codec for `Uint8Array` values (judged by internal slots, so a Proxy cannot pose as one). */
export const BytesC = new t.Type<Uint8Array, Uint8Array, unknown>(
  'Bytes',
  isBytes,
  (u, c) => (isBytes(u) ? t.success(u) : t.failure(u, c)),
  t.identity,
);

/** io-ts codec for metadata maps. */
export const MetadataC = t.record(t.string, BytesC);

/** io-ts codec for an element. */
export const ElementC = t.intersection([
  t.type({
    id: ElementIdC,
    ro: MetadataC,
    rw: MetadataC,
    revision: t.number,
    created: t.string,
    modified: t.string,
    attributes: t.UnknownRecord,
  }),
  t.partial({ parent: ElementIdC, checksum: t.string }),
]);

/** An element: what every store answers. `created`/`modified` are ISO-8601 times. */
export type Element = t.TypeOf<typeof ElementC>;

/** The JSON form of an element: IDs as strings, metadata values base64. */
export interface ElementJson {
  readonly id: string;
  readonly parent?: string;
  readonly ro: Readonly<Record<string, string>>;
  readonly rw: Readonly<Record<string, string>>;
  readonly checksum?: string;
  readonly revision: number;
  readonly created: string;
  readonly modified: string;
  readonly attributes: Readonly<Record<string, unknown>>;
}

// Own keys only, and entries created as own data properties: a key named `__proto__` or
// `constructor` stays an ordinary key.
const b64 = (m: Readonly<Record<string, Uint8Array>>): Record<string, string> =>
  Object.fromEntries(
    Object.keys(m).map((k) => {
      const v = m[k] ?? new Uint8Array();
      return [k, Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64')];
    }),
  );
const unb64 = (m: Readonly<Record<string, string>>): Record<string, Uint8Array> =>
  Object.fromEntries(Object.keys(m).map((k) => [k, new Uint8Array(Buffer.from(m[k] ?? '', 'base64'))]));

/** Element to its JSON form. */
export const elementToJson = (e: Element): ElementJson => ({
  id: e.id.key,
  ...(e.parent === undefined ? {} : { parent: e.parent.key }),
  ro: b64(e.ro),
  rw: b64(e.rw),
  ...(e.checksum === undefined ? {} : { checksum: e.checksum }),
  revision: e.revision,
  created: e.created,
  modified: e.modified,
  attributes: e.attributes,
});

/** io-ts codec for the JSON form, decoding to an `Element`. */
export const ElementJsonC = new t.Type<Element, ElementJson, unknown>(
  'ElementJson',
  (u): u is Element => ElementC.is(u),
  (u, c) => {
    const shape = t
      .intersection([
        t.type({
          id: ElementIdC,
          ro: t.record(t.string, t.string),
          rw: t.record(t.string, t.string),
          revision: t.number,
          created: t.string,
          modified: t.string,
          attributes: t.UnknownRecord,
        }),
        t.partial({ parent: ElementIdC, checksum: t.string }),
      ])
      .validate(u, c);
    if (shape._tag === 'Left') return shape;
    const j = shape.right;
    return t.success({ ...j, ro: unb64(j.ro), rw: unb64(j.rw) });
  },
  elementToJson,
);
