/**
 * Hostile input for property tests: values that wedge, crash or fool code which trusts its
 * arguments. Every public lessl function must answer these with a typed error (or a safe
 * value), never a throw.
 *
 * Included: `null`, `undefined`, odd numbers, BigInts, symbols, functions, cyclic objects and
 * arrays, huge sparse arrays, deep nesting, Proxies whose every trap throws, revoked Proxies,
 * objects with throwing getters, getters that answer a plausible value once and then throw,
 * throwing `toString`/`toJSON`/`Symbol.toStringTag`, thenables whose `then` throws, fake and
 * tampered byte arrays, and keys named like `Object.prototype` members (`__proto__` included,
 * as an own key). Thenables that never settle are left out: awaiting one waits forever by
 * the rules of Promises, whatever the callee does.
 *
 * The arbitraries generate recipes (`Hostile`), not the values: fast-check itself inspects
 * every value it generates (`cloneMethod in v`, and `stringify` for reports), which a revoked
 * Proxy answers with a throw. `make()` builds a fresh value each time, so stateful values
 * (getters that throw on their second read) behave the same on every run and when shrinking.
 * @example fc.assert(fc.property(hostile, (h) => { parseId(h.make()); }))
 */
import fc from 'fast-check';

/** Keys that name `Object.prototype` members (plus `then`, which Promises look up). */
export const PROTOTYPE_KEYS: readonly string[] = [
  'constructor',
  'toString',
  'valueOf',
  '__proto__',
  'hasOwnProperty',
  'isPrototypeOf',
  'propertyIsEnumerable',
  'toLocaleString',
  'then',
];

/** Field names of lessl inputs (IDs, filters, specs, Eithers, options), so hostile objects reach real code paths. */
export const FIELD_NAMES: readonly string[] = [
  'id',
  'key',
  'kind',
  'store',
  'name',
  'parent',
  'ro',
  'rw',
  'parts',
  'keys',
  'namePrefix',
  'limit',
  'types',
  'kinds',
  'ids',
  'stores',
  'cmd',
  'env',
  'limits',
  'restart',
  'interaction',
  'log',
  'credentials',
  'policy',
  'destination',
  '_tag',
  'left',
  'right',
  'message',
  'since',
  'highWaterMark',
  'overflow',
  'signal',
];

/** A recipe for a hostile value: `make()` builds a fresh one; `label` describes it in reports. */
export interface Hostile<V = unknown> {
  readonly label: string;
  make(): V;
}

/** A recipe from a label and a builder. */
export const recipe = <V>(label: string, make: () => V): Hostile<V> => {
  const h = { label, make, [fc.toStringMethod]: () => label };
  return h;
};

/**
 * Deliberately ill-typed: answers `value` as whatever type the caller's parameter declares.
 * The hostile-input and exact-option cases hand lessl values that break its declared types on
 * purpose (a BigInt for an ID, a misspelt option key, a string for bytes): that is what they
 * test. This is the one place that tells the compiler so; never use it to quiet a real error.
 * @example await fails(l.stores.task.update(id, { a: b('1') }, illTyped({ ifRevison: 1 })), 'InvalidEntry');
 */
export const illTyped = <T>(value: unknown): T => value as T;

/** A fresh value of the recipe `h`, ill-typed on purpose (see `illTyped`): what a hostile call passes. */
export const ill = <T>(h: Hostile): T => illTyped<T>(h.make());

const boom = (): never => {
  throw new Error('hostile: this throws');
};

/** A Proxy whose every trap throws. */
const trapping = (target: object): object =>
  new Proxy(target, {
    get: boom,
    set: boom,
    has: boom,
    ownKeys: boom,
    getOwnPropertyDescriptor: boom,
    getPrototypeOf: boom,
    setPrototypeOf: boom,
    defineProperty: boom,
    deleteProperty: boom,
    isExtensible: boom,
    preventExtensions: boom,
    apply: boom,
    construct: boom,
  });

/** A Proxy that has been revoked: every operation on it throws. */
const revoked = (target: object): object => {
  const r = Proxy.revocable(target, {});
  r.revoke();
  return r.proxy;
};

/** `o` with enumerable property `k` whose getter throws. */
const throwingGetter = (o: object, k: string): object => Object.defineProperty(o, k, { get: boom, enumerable: true });

/** `o` with enumerable property `k` whose getter answers `v` once, then throws. */
const flakyGetter = (o: object, k: string, v: unknown): object => {
  let reads = 0;
  const get = (): unknown => (reads++ === 0 ? v : boom());
  return Object.defineProperty(o, k, { get, enumerable: true });
};

const cyclicObject = (): object => {
  const o: Record<string, unknown> = { id: 'image://local/x' };
  o.self = o;
  o.ro = o;
  o.parts = [o];
  return o;
};

const cyclicArray = (): unknown[] => {
  const a: unknown[] = ['created'];
  a.push(a);
  return a;
};

const hugeSparseArray = (): unknown[] => {
  const a: unknown[] = [];
  a.length = 2 ** 32 - 1;
  return a;
};

const deeplyNested = (): unknown => {
  let v: unknown = 'bottom';
  for (let i = 0; i < 10_000; i++) v = [v];
  return { parts: v, cmd: v, ro: { k: v } };
};

/** A real `Uint8Array` that lies about its length and has a trapping prototype. */
const tamperedBytes = (): Uint8Array => {
  const b = new Uint8Array(4);
  Object.defineProperty(b, 'byteLength', { get: boom });
  Object.setPrototypeOf(b, trapping({}));
  return b;
};

const builders: readonly Hostile[] = [
  recipe('cyclic object', cyclicObject),
  recipe('cyclic array', cyclicArray),
  recipe('sparse array of length 2^32-1', hugeSparseArray),
  recipe('arrays nested 10000 deep', deeplyNested),
  recipe('tampered Uint8Array', tamperedBytes),
  recipe('revoked Proxy of {}', () => revoked({})),
  recipe('revoked Proxy of []', () => revoked([])),
  recipe('revoked Proxy of a function', () => revoked(() => undefined)),
  recipe('trapping Proxy of {}', () => trapping({})),
  recipe('trapping Proxy of []', () => trapping([])),
  recipe('trapping Proxy of a function', () => trapping(() => undefined)),
  recipe('Proxy of a Uint8Array', () => new Proxy(new Uint8Array(2), {})),
  recipe('fake bytes', () => ({ byteLength: 1, buffer: new ArrayBuffer(1), byteOffset: 0 })),
  recipe('throwing conversions', () => ({ toString: boom, valueOf: boom, toJSON: boom, [Symbol.toPrimitive]: boom })),
  recipe('{ toString: false, valueOf: null }', () => ({ toString: false, valueOf: null })),
  recipe('throwing Symbol.toStringTag', () => Object.defineProperty({}, Symbol.toStringTag, { get: boom })),
  recipe('{ then: throws }', () => ({ then: boom })),
  recipe('{ then: "not a function" }', () => ({ then: 'not a function' })),
  recipe('{ [Symbol.asyncIterator]: 42 }', () => ({ [Symbol.asyncIterator]: 42 })),
  recipe('throwing Symbol.asyncIterator', () => Object.defineProperty({}, Symbol.asyncIterator, { get: boom })),
  recipe('own __proto__, constructor, toString', () => JSON.parse('{"__proto__": {"k": "v"}, "constructor": 1, "toString": {}}')),
  recipe('Object.create(null)', (): unknown => Object.create(null)),
  recipe('a throwing function', () => boom),
  recipe('a function posing as an ID and a Right', () =>
    Object.assign(() => undefined, { key: 'image://local/x', _tag: 'Right' }),
  ),
  recipe('a symbol', () => Symbol('hostile')),
  recipe('an invalid Date', () => new Date(Number.NaN)),
  recipe('a Map', () => new Map([['types', ['created']]])),
];

const built: fc.Arbitrary<Hostile> = fc.constantFrom(...builders);

/** Keys: prototype-named, lessl field names, short strings. */
export const hostileKey: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(...PROTOTYPE_KEYS),
  fc.constantFrom(...FIELD_NAMES),
  fc.string({ maxLength: 8 }),
);

const primitive: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(null, undefined, true, 0, -0, Number.NaN, Infinity, -Infinity, 2 ** 53, '', 'image://local/x'),
  fc.bigInt(),
  fc.double(),
  fc.string({ maxLength: 40 }),
  fc.string({ maxLength: 8 }).map((d) => Symbol(d)),
);

const anything: fc.Arbitrary<unknown> = fc.anything({
  maxDepth: 3,
  key: hostileKey,
  withBigInt: true,
  withBoxedValues: true,
  withDate: true,
  withMap: true,
  withSet: true,
  withNullPrototype: true,
  withObjectString: true,
  withSparseArray: true,
  withTypedArray: true,
});

/** Values fast-check can hold itself, as recipes. */
const plain: fc.Arbitrary<Hostile> = fc.oneof(primitive, anything).map((v) => recipe(fc.stringify(v), () => v));

const labelled = (entries: readonly (readonly [string, Hostile])[]): string =>
  `{ ${entries.map(([k, h]) => `${JSON.stringify(k)}: ${h.label}`).join(', ')} }`;

const record = (entries: readonly (readonly [string, Hostile])[]): Hostile<object> =>
  recipe(labelled(entries), () => Object.fromEntries(entries.map(([k, h]) => [k, h.make()])));

/** Wraps an object recipe: a throwing or flaky getter on a lessl field, a trapping or revoked Proxy. */
const wrapped = (o: fc.Arbitrary<Hostile<object>>, leaf: fc.Arbitrary<Hostile>): fc.Arbitrary<Hostile<object>> =>
  fc.oneof(
    fc.tuple(o, hostileKey).map(([x, k]) => recipe(`${x.label} with throwing getter ${k}`, () => throwingGetter(x.make(), k))),
    fc
      .tuple(o, fc.constantFrom(...FIELD_NAMES), leaf)
      .map(([x, k, v]) =>
        recipe(`${x.label} with ${k} = ${v.label} once, then throwing`, () => flakyGetter(x.make(), k, v.make())),
      ),
    o.map((x) => recipe(`trapping Proxy of ${x.label}`, () => trapping(x.make()))),
    o.map((x) => recipe(`revoked Proxy of ${x.label}`, () => revoked(x.make()))),
  );

const leaf: fc.Arbitrary<Hostile> = fc.oneof(plain, built);

const tree = fc.letrec<{ value: Hostile; object: Hostile<object>; array: Hostile }>((tie) => {
  const entries = (max: number) => fc.array(fc.tuple(hostileKey, tie('value')), { maxLength: max }).map(record);
  return {
    value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, leaf, tie('object'), tie('array')),
    object: fc.oneof({ depthSize: 'small' }, entries(5), wrapped(entries(3), leaf)),
    array: fc
      .array(tie('value'), { maxLength: 4 })
      .map((items) => recipe(`[${items.map((h) => h.label).join(', ')}]`, () => items.map((h) => h.make()))),
  };
});

/** Hostile objects (recipes): records with lessl field names and prototype-named keys, hostile values, getters, Proxies. */
export const hostileObject: fc.Arbitrary<Hostile<object>> = tree.object;

/** Any hostile value (recipes): primitives, symbols, BigInts, functions, cycles, Proxies (revoked too), getters, ... */
export const hostile: fc.Arbitrary<Hostile> = tree.value;
