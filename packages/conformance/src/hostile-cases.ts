/**
 * Hostile-input cases: every public entry point of the backend under test (stores,
 * composer, task lifecycle, `run`, events and the Promise façade) is called with hostile values
 * (see `hostile.ts`) in every argument position and inside otherwise valid arguments.
 *
 * After each call the probe (`hostile-probe.ts`) checks: it answered a typed lessl error or a
 * result (no synchronous throw, no rejection with anything but a `LesslError`, settled within a
 * bound), nothing escaped (no unhandled rejection or uncaught exception), a later write still
 * works (the registry is not wedged) and a subscriber installed beforehand saw that write's events.
 *
 * Runs per property: env `HOSTILE_RUNS`, else `SuiteOptions.hostileRuns` (default 100).
 */
import fc from 'fast-check';
import * as E from 'fp-ts/lib/Either.js';
import { LesslError, promise, showValue, type ElementKind, type ElementStore, type Handle } from '@lessl/core';
import { assert, fails, ok, smallTar, uniq } from './harness.js';
import { hostile, hostileKey, hostileObject, ill, illTyped, recipe, type Hostile } from './hostile.js';
import { capabilitiesOf } from './capabilities.js';
import { Probe } from './hostile-probe.js';
import type { Case, SuiteOptions, TestBackend } from './types.js';

/** What the hostile cases did so far (shared by a suite's cases; read it once they ran). */
export interface HostileTally {
  /** Property runs (each makes one call of every entry point of its group). */
  runs: number;
  /** Hostile calls made, each followed by the checks above. */
  calls: number;
  /** Time spent in the hostile cases, ms. */
  ms: number;
}

const KINDS: readonly ElementKind[] = ['image', 'volume', 'task', 'executor'];
/** A spec that ends at once, on busybox and on the memory backend's tiny shell. */
const QUICK = { cmd: ['sh', '-c', 'exit 0'] };

/** Runs per property: env HOSTILE_RUNS, else the suite option, else 100. */
export const hostileRuns = (o: SuiteOptions): number => {
  const env = Number(process.env.HOSTILE_RUNS);
  return Number.isInteger(env) && env > 0 ? env : (o.hostileRuns ?? 100);
};

/** A call's printable form, from the labels of its arguments. */
const label = (name: string, args: readonly Hostile[]): string => `${name}(${args.map((h) => h.label).join(', ')})`;

/** A recipe answering `v` itself (a fixture ID, a valid handle, ...). */
const value = (v: unknown, name = showValue(v)): Hostile => recipe(name, () => v);

/** Hostile values, sometimes one of `plausible` (so the call gets past its first checks). */
const arg = (...plausible: Hostile[]): fc.Arbitrary<Hostile> =>
  plausible.length === 0
    ? hostile
    : fc.oneof({ arbitrary: hostile, weight: 3 }, { arbitrary: fc.constantFrom(...plausible), weight: 1 });

/** A recipe for `{ ...base, [k]: h }` (base built fresh each time). */
const withField = (base: () => Record<string, unknown>, k: string, h: Hostile, name: string): Hostile =>
  recipe(`${name} with ${JSON.stringify(k)}: ${h.label}`, () =>
    Object.defineProperty(base(), k, { value: h.make(), enumerable: true }),
  );

/** What every hostile case starts from: one element of each kind, a finished task, handles. */
interface Fixtures {
  readonly ids: Readonly<Record<ElementKind, string>>;
  /** A task that never ran (never waited for: `wait` would wait for its run). */
  readonly idle: string;
  /** A task whose run has ended. */
  readonly ended: string;
  /** A committed executor with the image joined, and a fresh one (revision 0) with the image joined. */
  readonly committed: Handle;
  readonly fresh: Handle;
  /** A small tar, for creates with data. */
  readonly tar: Uint8Array;
}

const fixtures = async (l: TestBackend, o: SuiteOptions, data: () => Promise<Uint8Array>): Promise<Fixtures> => {
  const image = `image://local/${uniq('himg')}`;
  await ok(
    l.stores.image.create({ id: image, ...(capabilitiesOf(o, l).data ? { data: await data() } : {}) }),
    'create the image',
  );
  const volume = `volume://local/${uniq('hvol')}`;
  await ok(l.stores.volume.create({ id: volume }), 'create the volume');
  const idle = `task://local/${uniq('hidle')}`;
  await ok(l.stores.task.create({ id: idle, spec: QUICK }), 'create a task');
  const ended = (await ok(l.run({ image, spec: QUICK, keep: true }), 'run a task')).id.key;
  const x = `executor://local/${uniq('hx')}`;
  const joined = async (id: string): Promise<Handle> => ok(l.composer.join(await ok(l.composer.handle(id)), image));
  const r = await ok(l.composer.commit(await joined(x)), 'commit an executor');
  assert.ok(r.committed);
  return {
    ids: { image, volume, task: idle, executor: x },
    idle,
    ended,
    committed: r.handle,
    fresh: await joined(`executor://local/${uniq('hx')}`),
    tar: await smallTar(),
  };
};

/** One group of entry points: the arbitrary of one run's arguments, and the calls it makes. */
interface Group<A> {
  readonly name: string;
  readonly args: (f: Fixtures) => fc.Arbitrary<A>;
  readonly calls: (p: Probe, l: TestBackend, f: Fixtures, a: A) => Promise<void>;
}

/** Where `create` gets its hostile piece when the rest of the request is valid. */
const CREATE_SPOTS = [
  'ro',
  'rw',
  'options',
  'parent',
  'data',
  'checksum',
  'spec',
  'spec field',
  'env',
  'limits',
  'request field',
  'ctx',
] as const;

/** Four hostile values, a key and a hostile map: what every hostile call draws from. */
interface HostileArgs {
  readonly a: Hostile;
  readonly b: Hostile;
  readonly c: Hostile;
  readonly d: Hostile;
  readonly key: string;
  readonly map: Hostile;
}

interface StoreArgs extends HostileArgs {
  readonly spot: (typeof CREATE_SPOTS)[number];
}

/** A create request for `kind` that is valid but for the hostile piece at `spot`. */
const hostileCreate = (kind: ElementKind, a: StoreArgs, tar: Uint8Array): { req: Hostile; ctx?: Hostile } => {
  const id = (): string => `${kind}://local/${uniq('hc')}`;
  const base = (): Record<string, unknown> => ({ id: id(), ...(kind === 'task' ? { spec: QUICK } : {}) });
  const spec = (k: string, v: unknown): Record<string, unknown> => ({ ...base(), spec: { ...QUICK, [k]: v } });
  const name = `a valid ${kind} request`;
  switch (a.spot) {
    case 'ro':
    case 'rw':
    case 'options':
      return {
        req: withField(
          base,
          a.spot,
          a.spot === 'ro' ? recipe(`{ ${a.key}: ${a.a.label} }`, () => ({ [a.key]: a.a.make() })) : a.map,
          name,
        ),
      };
    case 'parent':
    case 'checksum':
      return { req: withField(a.spot === 'checksum' ? () => ({ ...base(), data: tar }) : base, a.spot, a.a, name) };
    case 'data':
    case 'spec':
      return { req: withField(base, a.spot, a.a, name) };
    case 'spec field':
      return { req: recipe(`${name}, its spec with ${JSON.stringify(a.key)}: ${a.a.label}`, () => spec(a.key, a.a.make())) };
    case 'env':
      return { req: recipe(`${name}, its spec with env A: ${a.a.label}`, () => spec('env', { A: a.a.make() })) };
    case 'limits':
      return { req: recipe(`${name}, its spec with limits: ${a.map.label}`, () => spec('limits', a.map.make())) };
    case 'request field':
      return { req: withField(base, a.key, a.a, name) };
    case 'ctx':
      return { req: recipe(name, base), ctx: a.a };
  }
};

const storeGroup: Group<StoreArgs> = {
  name: 'stores: create, read, update, delete and list of every kind',
  args: (f) => {
    const ids = KINDS.map((k) => value(f.ids[k]));
    return fc.record({
      a: arg(...ids),
      b: arg(value({ keys: ['a'] }), value({ namePrefix: 'h' })),
      c: arg(value({ a: new Uint8Array([1]) })),
      d: arg(value({ ifRevision: 1 })),
      key: hostileKey,
      map: hostileObject,
      spot: fc.constantFrom(...CREATE_SPOTS),
    });
  },
  calls: async (p, l, f, a) => {
    for (const kind of KINDS) {
      const s: ElementStore = l.stores[kind];
      const mine = f.ids[kind];
      const n = (m: string): string => `stores.${kind}.${m}`;
      await p.te(label(n('create'), [a.a, a.b]), () => s.create(ill(a.a), ill(a.b)));
      const hc = hostileCreate(kind, a, f.tar);
      await p.te(label(n('create'), hc.ctx === undefined ? [hc.req] : [hc.req, hc.ctx]), () =>
        s.create(ill(hc.req), hc.ctx === undefined ? undefined : ill(hc.ctx)),
      );
      await p.te(label(n('read'), [a.a, a.b, a.c]), () => s.read(ill(a.a), ill(a.b), ill(a.c)));
      await p.te(label(n('read'), [value(mine), a.map, a.d]), () => s.read(mine, ill(a.map), ill(a.d)));
      await p.te(label(n('update'), [a.a, a.b, a.c, a.d]), () => s.update(ill(a.a), ill(a.b), ill(a.c), ill(a.d)));
      const patch = recipe(`{ ${a.key}: ${a.b.label} }`, () => ({ [a.key]: a.b.make() }));
      await p.te(label(n('update'), [value(mine), patch, a.d, a.c]), () => s.update(mine, ill(patch), ill(a.d), ill(a.c)));
      await p.te(label(n('delete'), [a.a, a.b]), () => s.delete(ill(a.a), ill(a.b)));
      await p.te(label(n('list'), [a.b, a.c]), () => s.list(ill(a.b), ill(a.c)));
      const filter = recipe(`{ ro: { ${a.key}: ${a.a.label} } }`, () => ({ ro: { [a.key]: a.a.make() } }));
      await p.te(label(n('list'), [filter]), () => s.list(ill(filter)));
    }
  },
};

interface ComposerArgs extends HostileArgs {
  readonly forge: 'executor' | 'revision' | 'options' | 'members' | 'member' | 'member field';
}

/** `h` with one hostile part. */
const forged = (h: Handle, a: ComposerArgs): Hostile => {
  const name = `a valid handle of ${h.executor.key}`;
  switch (a.forge) {
    case 'member':
      return recipe(`${name} with an extra member ${a.a.label}`, () => ({ ...h, members: [...h.members, a.a.make()] }));
    case 'member field':
      return recipe(`${name}, its first member with ${JSON.stringify(a.key)}: ${a.a.label}`, () => ({
        ...h,
        members: h.members.map((m, i) =>
          i === 0 ? Object.defineProperty({ ...m }, a.key, { value: a.a.make(), enumerable: true }) : m,
        ),
      }));
    default:
      return withField(() => ({ ...h }), a.forge, a.a, name);
  }
};

const composerGroup: Group<ComposerArgs> = {
  name: 'composer: handle, join, bind, unbind, leave and commit',
  args: (f) => {
    const handles = [value(f.committed, 'the committed handle'), value(f.fresh, 'a fresh handle')];
    const ids = [...KINDS.map((k) => value(f.ids[k])), value(f.ended)];
    return fc.record({
      a: arg(...handles, ...ids),
      b: arg(...ids),
      c: arg(value({ mountpoint: '/data' }), value({ readOnly: true })),
      d: hostile,
      key: hostileKey,
      map: hostileObject,
      forge: fc.constantFrom('executor', 'revision', 'options', 'members', 'member', 'member field'),
    });
  },
  calls: async (p, l, f, a) => {
    const c = l.composer;
    const x = value(`executor://local/${uniq('hx')}`);
    await p.te(label('composer.handle', [a.a, a.b, a.c]), () => c.handle(ill(a.a), ill(a.b), ill(a.c)));
    await p.te(label('composer.handle', [x, a.map]), () => c.handle(ill(x), ill(a.map)));
    const backend = recipe(`{ backend: ${a.map.label} }`, () => ({ backend: a.map.make() }));
    await p.te(label('composer.handle', [x, backend]), () => c.handle(ill(x), ill(backend)));
    await p.te(label('composer.join', [a.a, a.b, a.c, a.d]), () => c.join(ill(a.a), ill(a.b), ill(a.c), ill(a.d)));
    const fresh = value(f.fresh, 'a fresh handle');
    const mount = recipe(`{ mountpoint: ${a.a.label}, readOnly: ${a.d.label} }`, () => ({
      mountpoint: a.a.make(),
      readOnly: a.d.make(),
    }));
    await p.te(label('composer.join', [fresh, value(f.ids.volume), mount]), () => c.join(f.fresh, f.ids.volume, ill(mount)));
    await p.te(label('composer.join', [fresh, a.b, a.c]), () => c.join(f.fresh, ill(a.b), ill(a.c)));
    for (const verb of ['bind', 'unbind', 'leave'] as const) {
      await p.te(label(`composer.${verb}`, [a.a, a.b, a.d]), () => c[verb](ill(a.a), ill(a.b), ill(a.d)));
      await p.te(label(`composer.${verb}`, [fresh, a.b]), () => c[verb](f.fresh, ill(a.b)));
    }
    await p.te(label('composer.commit', [a.a, a.d]), () => c.commit(ill(a.a), ill(a.d)));
    const h = forged(a.forge === 'members' ? f.fresh : f.committed, a);
    await p.te(label('composer.commit', [h]), () => c.commit(ill(h)));
    // a new executor whose options (backend options included) hold the hostile value
    const made = await c.handle(ill(x), ill(backend))();
    if (E.isRight(made)) {
      const j = await c.join(made.right, f.ids.image)();
      if (E.isRight(j))
        await p.te(label('composer.commit', [value(j.right, `a handle with options ${backend.label}`)]), () => c.commit(j.right));
    }
  },
};

interface TaskArgs {
  readonly a: Hostile;
  readonly b: Hostile;
  readonly w: Hostile;
  readonly key: string;
  readonly map: Hostile;
  readonly spot:
    | 'request'
    | 'spec'
    | 'spec field'
    | 'env'
    | 'options'
    | 'backend'
    | 'volumes'
    | 'mount'
    | 'image'
    | 'signal'
    | 'keep'
    | 'principal';
}

/** A `run()` request for a task that ends at once, valid but for the hostile piece at `spot`. */
const hostileRun = (f: Fixtures, a: TaskArgs): Hostile => {
  const base = (): Record<string, unknown> => ({ image: f.ids.image, spec: QUICK });
  const name = 'a valid run request';
  switch (a.spot) {
    case 'request':
      return a.a;
    case 'spec field':
      return recipe(`${name}, its spec with ${JSON.stringify(a.key)}: ${a.a.label}`, () => ({
        ...base(),
        spec: { ...QUICK, [a.key]: a.a.make() },
      }));
    case 'env':
      return recipe(`${name}, its spec with env A: ${a.a.label}`, () => ({
        ...base(),
        spec: { ...QUICK, env: { A: a.a.make() } },
      }));
    case 'options':
      return withField(base, 'options', a.map, name);
    case 'backend':
      return recipe(`${name} with options { backend: ${a.map.label} }`, () => ({
        ...base(),
        options: { backend: a.map.make() },
      }));
    case 'mount':
      return recipe(`${name} with volumes [{ id: ${f.ids.volume}, mountpoint: ${a.a.label} }]`, () => ({
        ...base(),
        volumes: [{ id: f.ids.volume, mountpoint: a.a.make() }],
      }));
    default:
      return withField(base, a.spot, a.a, name);
  }
};

const taskGroup: Group<TaskArgs> = {
  name: 'tasks: status, wait, logs, kill and input; run()',
  args: (f) => {
    const tasks = [value(f.idle), value(f.ended)];
    return fc.record({
      a: arg(...tasks),
      b: arg(value({ follow: true }), value({ signal: 'KILL', graceMs: 0 }), value({ since: 1 })),
      // never the idle task: waiting for it waits for a run that never comes, as documented
      w: arg(value(f.ended), value(`task://local/${uniq('none')}`)),
      key: hostileKey,
      map: hostileObject,
      spot: fc.constantFrom(
        'request',
        'spec',
        'spec field',
        'env',
        'options',
        'backend',
        'volumes',
        'mount',
        'image',
        'signal',
        'keep',
        'principal',
      ),
    });
  },
  calls: async (p, l, f, a) => {
    const t = l.tasks;
    const ended = value(f.ended);
    await p.te(label('tasks.status', [a.a, a.b]), () => t.status(ill(a.a), ill(a.b)));
    await p.te(label('tasks.wait', [a.w, a.b]), () => t.wait(ill(a.w), ill(a.b)));
    await p.te(label('tasks.wait', [ended, a.map]), () => t.wait(f.ended, ill(a.map)));
    await p.iterated(label('tasks.logs', [a.a, a.b]), () => t.logs(ill(a.a), ill(a.b)), false);
    await p.iterated(label('tasks.logs', [ended, a.map]), () => t.logs(f.ended, ill(a.map)), false);
    await p.te(label('tasks.kill', [a.a, a.b]), () => t.kill(ill(a.a), ill(a.b)));
    await p.te(label('tasks.kill', [ended, a.map]), () => t.kill(f.ended, ill(a.map)));
    await p.te(label('tasks.input', [a.a, a.map, a.b]), () => t.input(ill(a.a), ill(a.map), ill(a.b)));
    await p.te(label('tasks.input', [ended, a.b, a.map]), () => t.input(f.ended, ill(a.b), ill(a.map)));
    const req = hostileRun(f, a);
    await p.te(label('run', [req]), () => l.run(ill(req)));
  },
};

/** Two hostile values and a field name (events' filters, functions' definitions). */
interface EventArgs {
  readonly a: Hostile;
  readonly b: Hostile;
  readonly field: string;
}

const handlers = [
  value(() => undefined, 'a handler'),
  value(() => {
    throw new Error('a throwing handler');
  }, 'a throwing handler'),
];

const eventGroup: Group<EventArgs> = {
  name: 'events: subscribe and stream',
  args: () =>
    fc.record({
      a: arg(value({}), value({ types: ['created'] })),
      b: arg(...handlers, value({ since: 0 }), value({ highWaterMark: 1 })),
      field: fc.oneof(fc.constantFrom('types', 'kinds', 'ids', 'stores'), hostileKey),
    }),
  calls: async (p, l, _f, a) => {
    const ev = l.events;
    const filter = recipe(`{ ${a.field}: ${a.a.label} }`, () => ({ [a.field]: a.a.make() }));
    await p.subscribed(label('events.subscribe', [a.a, a.b]), () => ev.subscribe(ill(a.a), ill(a.b)));
    for (const h of handlers) await p.subscribed(label('events.subscribe', [filter, h]), () => ev.subscribe(ill(filter), ill(h)));
    await p.iterated(label('events.stream', [a.a, a.b]), () => ev.stream(ill(a.a), ill(a.b)), true);
    await p.iterated(label('events.stream', [filter]), () => ev.stream(ill(filter)), true);
  },
};

/** A valid definition of the probed function, built fresh. */
const functionOf = (f: Fixtures): Record<string, unknown> => ({
  name: 'hostile-fn',
  image: f.ids.image,
  spec: { cmd: ['true'] },
});

const functionGroup: Group<EventArgs> = {
  name: 'functions: deploy, get, list, remove, invoke and logs',
  args: (f) => {
    const definition = { ...functionOf(f), reuse: 'per-function' };
    return fc.record({
      a: arg(value('hostile-fn'), value(definition)),
      b: arg(value({ stdin: 'x' }), value({ principal: 'someone' }), value({ stdin: 42 })),
      field: fc.oneof(fc.constantFrom('name', 'image', 'spec', 'reuse', 'concurrency', 'minContainers', 'idleMs'), hostileKey),
    });
  },
  calls: async (p, l, f, a) => {
    const fn = l.functions;
    if (fn === undefined) return;
    const def = withField(() => functionOf(f), a.field, a.b, 'a definition');
    await p.te(label('functions.deploy', [a.a, a.b]), () => fn.deploy(ill(a.a), ill(a.b)));
    await p.te(label('functions.deploy', [def]), () => fn.deploy(ill(def)));
    await p.te(label('functions.get', [a.a, a.b]), () => fn.get(ill(a.a), ill(a.b)));
    await p.te(label('functions.list', [a.b]), () => fn.list(ill(a.b)));
    await p.te(label('functions.invoke', [a.a, a.b]), () => fn.invoke(ill(a.a), ill(a.b)));
    await p.te(label('functions.logs', [a.a, a.b]), () => fn.logs(ill(a.a), ill(a.b)));
    await p.te(label('functions.remove', [a.a, a.b]), () => fn.remove(ill(a.a), ill(a.b)));
  },
};

interface FacadeArgs {
  readonly kind: ElementKind;
  readonly a: Hostile;
  readonly b: Hostile;
  readonly c: Hostile;
}

const facadeGroup: Group<FacadeArgs> = {
  name: 'the Promise façade of stores, composer, tasks, run and events (subscribe included)',
  args: (f) => {
    const ids = [...KINDS.map((k) => value(f.ids[k])), value(f.ended)];
    return fc.record({
      kind: fc.constantFrom(...KINDS),
      a: arg(...ids, value(f.fresh, 'a fresh handle'), value({})),
      b: arg(...ids, ...handlers),
      c: hostile,
    });
  },
  calls: async (p, l, f, a) => {
    const s = promise(l.stores[a.kind]);
    const n = (m: string): string => `promise(stores.${a.kind}).${m}`;
    await p.promised(label(n('create'), [a.a, a.c]), () => s.create(ill(a.a), ill(a.c)));
    await p.promised(label(n('read'), [a.a, a.b, a.c]), () => s.read(ill(a.a), ill(a.b), ill(a.c)));
    await p.promised(label(n('update'), [a.a, a.b, a.c]), () => s.update(ill(a.a), ill(a.b), ill(a.c)));
    await p.promised(label(n('delete'), [a.a, a.c]), () => s.delete(ill(a.a), ill(a.c)));
    await p.promised(label(n('list'), [a.a, a.c]), () => s.list(ill(a.a), ill(a.c)));
    const c = promise(l.composer);
    await p.promised(label('promise(composer).handle', [a.a, a.c]), () => c.handle(ill(a.a), ill(a.c)));
    for (const verb of ['join', 'bind', 'unbind', 'leave'] as const)
      await p.promised(label(`promise(composer).${verb}`, [a.a, a.b]), () => c[verb](ill(a.a), ill(a.b)));
    await p.promised(label('promise(composer).commit', [a.a, a.c]), () => c.commit(ill(a.a), ill(a.c)));
    const t = promise(l.tasks);
    await p.promised(label('promise(tasks).status', [a.a, a.c]), () => t.status(ill(a.a), ill(a.c)));
    const ended = value(f.ended);
    await p.promised(label('promise(tasks).wait', [ended, a.c]), () => t.wait(f.ended, ill(a.c)));
    await p.promised(label('promise(tasks).kill', [a.a, a.c]), () => t.kill(ill(a.a), ill(a.c)));
    await p.promised(label('promise(tasks).input', [a.a, a.b, a.c]), () => t.input(ill(a.a), ill(a.b), ill(a.c)));
    await p.iterated(label('promise(tasks).logs', [a.a, a.c]), () => t.logs(ill(a.a), ill(a.c)), false);
    await p.promised(label('promise(backend).run', [a.a]), () => promise(l).run(ill(a.a)));
    const ev = promise(l.events);
    await p.subscribed(label('promise(events).subscribe', [a.a, a.b]), () => ev.subscribe(ill(a.a), ill(a.b)));
    await p.iterated(label('promise(events).stream', [a.a, a.c]), () => ev.stream(ill(a.a), ill(a.c)), true);
  },
};

/**
 * The hostile cases: one per group of entry points. Each adds its runs and calls to `tally`
 * and prints them.
 */
export const hostileCases = (o: SuiteOptions, data: () => Promise<Uint8Array>, tally: HostileTally): Case[] => {
  const runs = hostileRuns(o);
  const bound = o.hostileBoundMs ?? 15_000;
  const spec = o.fixtures?.taskSpec ?? { cmd: ['sleep', '3600'] };
  const toCase = <A>(g: Group<A>): Case => ({
    name: `hostile input: ${g.name}`,
    timeout: Math.max(o.timeout ?? 60_000, runs * bound),
    fn: async (l: TestBackend) => {
      const f = await fixtures(l, o, data);
      const probe = new Probe(l, bound, spec);
      const uninstall = probe.install();
      const t0 = performance.now();
      let done = 0;
      try {
        await fc.assert(
          fc.asyncProperty(g.args(f), async (a) => {
            done++;
            await g.calls(probe, l, f, a);
          }),
          { numRuns: runs, endOnFailure: true },
        );
      } finally {
        uninstall();
        const ms = performance.now() - t0;
        tally.runs += done;
        tally.calls += probe.calls;
        tally.ms += ms;
        const where = o.prefix ?? 'conformance';
        console.log(`${where}: hostile input, ${g.name}: ${done} runs, ${probe.calls} calls in ${(ms / 1000).toFixed(1)} s`);
      }
    },
  });
  return [
    ...regressions(o),
    toCase(storeGroup),
    toCase(composerGroup),
    toCase(taskGroup),
    toCase(eventGroup),
    toCase(functionGroup),
    toCase(facadeGroup),
  ];
};

/** A Proxy whose every read throws. */
const unreadable = (): object =>
  new Proxy(
    {},
    {
      get: () => {
        throw new Error('hostile');
      },
    },
  );

/** Cases for what the fuzz found, so they stay found with any seed. */
const regressions = (o: SuiteOptions): Case[] => {
  const spec = o.fixtures?.taskSpec ?? { cmd: ['sleep', '3600'] };
  return [
    {
      name: 'hostile input: an unreadable create request, and options or handles JSON cannot hold, answer InvalidEntry; byte values are copied; writes go on',
      fn: async (l) => {
        for (const kind of KINDS) await fails(l.stores[kind].create(illTyped(unreadable())), 'InvalidEntry');
        const x = `executor://local/${uniq('hx')}`;
        await fails(l.composer.handle(x, illTyped({ backend: { n: 10n } })), 'InvalidEntry');
        const h = await ok(l.composer.handle(x));
        const cyclic: Record<string, unknown> = {};
        cyclic.self = cyclic;
        await fails(l.composer.commit({ ...h, options: { backend: cyclic } }), 'InvalidEntry');
        const task = `task://local/${uniq('t')}`;
        await ok(l.stores.task.create({ id: task, spec }));
        const member = { id: { kind: 'task', store: 'local', name: task.slice(13), key: task }, readOnly: 1n, state: 'bound' };
        await fails(l.composer.commit(illTyped({ ...h, members: [member] })), 'InvalidEntry');
        await fails(l.composer.bind({ ...h, revision: -1 }), 'InvalidEntry');
        // genuine bytes whose prototype traps (and that change after the call) are stored as a copy
        const bytes = new Uint8Array([1, 2]);
        Object.setPrototypeOf(bytes, unreadable());
        await ok(l.stores.task.update(task, { a: bytes }));
        bytes[0] = 9;
        assert.deepEqual([...((await ok(l.stores.task.read(task))).rw.a ?? [])], [1, 2]);
        await ok(l.stores.task.delete(task));
      },
    },
    {
      name: 'hostile input: unreadable task options and run requests, and huge sparse volume lists, answer InvalidEntry; logs rejects its first next() with it',
      fn: async (l) => {
        const task = `task://local/${uniq('t')}`;
        await ok(l.stores.task.create({ id: task, spec }));
        await fails(l.tasks.status(task, unreadable()), 'InvalidEntry');
        await fails(l.tasks.kill(task, unreadable()), 'InvalidEntry');
        await fails(l.tasks.wait(task, unreadable()), 'InvalidEntry');
        const sparse: unknown[] = [];
        sparse.length = 2 ** 32 - 1;
        await fails(l.run({ image: 'image://local/none', spec, volumes: illTyped(sparse) }), 'InvalidEntry');
        await fails(l.run(illTyped(unreadable())), 'InvalidEntry');
        const it = l.tasks.logs(task, unreadable())[Symbol.asyncIterator]();
        await assert.rejects(it.next(), (e: unknown) => e instanceof LesslError && e.tag === 'InvalidEntry');
      },
    },
    {
      name: 'hostile input: promise(events).subscribe answers an Unsubscribe; events arrive until it is called',
      fn: async (l) => {
        const seen: string[] = [];
        const off = promise(l.events).subscribe({ kinds: ['task'] }, (e) => seen.push(e.type));
        assert.equal(typeof off, 'function');
        const task = `task://local/${uniq('t')}`;
        await ok(l.stores.task.create({ id: task, spec }));
        off();
        await ok(l.stores.task.delete(task));
        assert.deepEqual(seen, ['created']);
      },
    },
  ];
};
