/**
 * The registry: element records, rw metadata, revisions, the reference index, composition
 * records, write intents and the event log, in one `level` database.
 *
 * Every change is one atomic batch together with its events; events are published only after
 * the batch is durable. Writes are group-committed: while one batch is in flight, later changes
 * queue and go out together in the next one, in order.
 *
 * Key layout (utf8 keys, JSON values):
 *   e!<id>   element record        x!<executor>  composition record
 *   m!instance  registry instance ID   m!compacted  last seq removed from the log by retention
 *   p!<id>   write intent          l!<seq:16>    event (the last one gives the seq on open)
 *   o!<task>!<run:8>!<offset:12>   a chunk of a task's kept output
 *   f!<name>   function definition
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { Level } from 'level';
import { MemoryLevel } from 'memory-level';
import type { AbstractBatchOperation, AbstractBatchOptions, AbstractLevel } from 'abstract-level';
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import {
  ElementJsonC,
  elementToJson,
  eventFromJson,
  isElementId,
  type Element,
  type FunctionInfo,
  type LesslEvent,
} from '@lessl/core';
import {
  CompositionRecordC,
  EventHub,
  FunctionRecordC,
  IntentC,
  KeyedLock,
  type Change,
  type CompositionRecord,
  type Durability,
  type Intent,
  type OutputRecord,
  type RegistryPort,
} from '@lessl/kit';

/** A level database with string keys and values. */
export type StringLevel = AbstractLevel<string, string, string>;

/** The durable (JSON) event `v` as published: IDs as `ElementId`s. */
const decodeEvent = (v: string): LesslEvent => {
  const e = eventFromJson(JSON.parse(v));
  if (e === undefined) throw new Error(`not an event in the log: ${v.slice(0, 80)}`);
  return e;
};

/** An `ElementId` as its key, anything else as it is. */
const keyOrValue = (v: unknown): unknown => (isElementId(v) ? v.key : v);

/** `u` with every `ElementId` value as its key (the log's string form). */
const keysOf = (u: Readonly<Record<string, unknown>>): Record<string, unknown> =>
  Object.fromEntries(Object.keys(u).map((k) => [k, keyOrValue(u[k])]));

/** A stored value `v` at key `k`, decoded with `codec`; a value that does not decode is a corrupt database. */
const stored = <A>(codec: t.Decoder<unknown, A>, k: string, v: string): A => {
  const d = codec.decode(JSON.parse(v));
  if (E.isLeft(d)) throw new Error(`registry: corrupt record ${k}`);
  return d.right;
};

/** An output chunk as stored: its stream (`o` or `e`) and its bytes in base64. */
const OutputChunkC = t.type({ s: t.string, d: t.string });
/** The start of a stored event: its time. */
const EventTimeC = t.partial({ time: t.unknown });

/** How to open a registry: where, and how durable its writes are (default `process`). */
export type RegistryOptions = (
  | { readonly location: string }
  | { readonly memory: true }
  | { readonly db: StringLevel }
  | { readonly db?: undefined; readonly location?: undefined; readonly memory?: undefined }
) & { readonly durability?: Durability };

/** True when `err` (from opening a database) says another holder has its lock. */
const isLocked = (err: unknown): boolean => {
  for (let e: unknown = err, i = 0; e instanceof Error && i < 4; e = e.cause, i++)
    if ('code' in e && e.code === 'LEVEL_LOCKED') return true;
  return false;
};

/**
 * Why a registry could not be opened, in words for `RuntimeError.message`: a directory whose
 * lock another process holds (or another open registry in this process) says so and names the
 * directory; anything else gives the database's reason.
 * @example registryOpenFailure({ location: './data' }, err) // 'could not open the registry at ./data: another process holds it ...'
 */
export const registryOpenFailure = (opts: unknown, err: unknown): string => {
  const location = typeof opts === 'object' && opts !== null && 'location' in opts ? opts.location : undefined;
  const where = typeof location === 'string' ? ` at ${path.resolve(location)}` : '';
  if (isLocked(err))
    return `could not open the registry${where}: another process holds it (its LOCK file is taken; one process at a time may open a registry directory, and only once); close that process or use another location`;
  const cause =
    err instanceof Error ? (err.cause instanceof Error ? `${err.message}: ${err.cause.message}` : err.message) : String(err);
  return `could not open the registry${where}: ${cause}`;
};

const lowerBound = (a: readonly string[], k: string): number => {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((a[mid] ?? '') < k) lo = mid + 1;
    else hi = mid;
  }
  return lo;
};
const seqKey = (n: number): string => `l!${String(n).padStart(16, '0')}`;
const outPrefix = (task: string, run?: number): string =>
  run === undefined ? `o!${task}!` : `o!${task}!${String(run).padStart(8, '0')}!`;
const outKey = (o: OutputRecord): string => `${outPrefix(o.task, o.run)}${String(o.offset).padStart(12, '0')}`;

/**
 * The batch options of a durability: classic-level's `sync` (fsync before the batch answers);
 * other levels ignore it (a memory-level has no disk).
 */
export const batchOptions = (d: Durability): AbstractBatchOptions<string, string> =>
  ({ sync: d === 'disk' }) as AbstractBatchOptions<string, string>;

/** A write operation on the database, its value serialised already. */
type Op = AbstractBatchOperation<StringLevel, string, string>;

/**
 * A change serialised when it is queued (so nothing in it can fail in the writer), and the
 * records the index is updated from: decoded back from that JSON, so the index holds exactly
 * what is durable and no object of the caller's.
 */
interface Prepared {
  readonly ops: readonly Op[];
  /** Each event as JSON without `seq` and `time` (they are assigned when the batch is built). */
  readonly events: readonly string[];
  readonly put: readonly Element[];
  readonly del: readonly string[];
  readonly putComposition: readonly CompositionRecord[];
  readonly delComposition: readonly string[];
  readonly putIntent: readonly Intent[];
  readonly delIntent: readonly string[];
  readonly putFunction: readonly FunctionInfo[];
  readonly delFunction: readonly string[];
}

interface Pending {
  readonly change: Prepared;
  settled: boolean;
  readonly resolve: (ev: LesslEvent[]) => void;
  readonly reject: (err: unknown) => void;
}

/**
 * The steps of a write, in order, named for the internal test seam `Registry.flushHook`:
 * serialising the change (when it is queued), then, in the writer, building the batch, the
 * level `batch` call, updating the index, publishing the events, settling the callers' promises.
 */
export type FlushStep = 'serialise' | 'build' | 'batch' | 'index' | 'publish' | 'resolve';

/**
 * Why `Registry.commit` refused or failed a change. `durable` is false: the change did not
 * happen. (After the batch is durable a call never fails: see `Registry.commit`.)
 */
export class RegistryWriteError extends Error {
  constructor(
    message: string,
    /** `serialise`: a value in the change is not JSON data; `closed`; `batch`: the batch was not written. */
    readonly reason: 'serialise' | 'closed' | 'batch',
    override readonly cause?: unknown,
  ) {
    super(message);
    this.name = 'RegistryWriteError';
  }
}

const describeErr = (err: unknown): string => {
  try {
    return err instanceof Error ? err.message : String(err);
  } catch {
    return 'an unprintable error';
  }
};

/** `JSON.stringify(u)`, or a `RegistryWriteError` naming `what` (a cycle, a BigInt, a throwing getter, a Proxy trap). */
const json = (what: string, u: unknown): string => {
  let s: string | undefined;
  try {
    s = JSON.stringify(u);
  } catch (err) {
    throw new RegistryWriteError(`cannot serialise ${what}: ${describeErr(err)}`, 'serialise', err);
  }
  if (s === undefined) throw new RegistryWriteError(`cannot serialise ${what}: not JSON data`, 'serialise');
  return s;
};

const str = (what: string, u: unknown): string => {
  if (typeof u !== 'string' || u === '')
    throw new RegistryWriteError(`cannot serialise ${what}: not a non-empty string`, 'serialise');
  return u;
};

const list = <A>(what: string, u: readonly A[] | undefined): readonly A[] => {
  if (u === undefined) return [];
  if (!Array.isArray(u)) throw new RegistryWriteError(`cannot serialise ${what}: not an array`, 'serialise');
  return u;
};

/** `u` serialised as `what`, and decoded back with `codec` (what the index and the events will hold). */
const serialised = <A>(codec: t.Decoder<unknown, A>, what: string, shape: string, u: unknown): { value: string; record: A } => {
  const value = json(what, u);
  const d = codec.decode(JSON.parse(value));
  if (E.isLeft(d)) throw new RegistryWriteError(`cannot serialise ${what}: not ${shape}`, 'serialise');
  return { value, record: d.right };
};

/**
 * Serialises a change and decodes it back (see `Prepared`). Throws `RegistryWriteError` for
 * anything that is not JSON data or not of the right shape; never leaves the writer a value
 * that could fail.
 */
const prepare = (c: Change): Prepared => {
  if (typeof c !== 'object' || c === null) throw new RegistryWriteError('a change must be an object', 'serialise');
  const ops: Op[] = [];
  const put = list('put', c.put).map((e, i) => {
    const { value, record } = serialised(ElementJsonC, `put[${i}]`, 'an element', elementToJson(e));
    ops.push({ type: 'put', key: `e!${record.id.key}`, value });
    return record;
  });
  const del = list('del', c.del).map((k, i) => str(`del[${i}]`, k));
  for (const k of del) ops.push({ type: 'del', key: `e!${k}` });
  const putComposition = list('putComposition', c.putComposition).map((x, i) => {
    const { value, record } = serialised(CompositionRecordC, `putComposition[${i}]`, 'a composition', x);
    ops.push({ type: 'put', key: `x!${record.executor}`, value });
    return record;
  });
  const delComposition = list('delComposition', c.delComposition).map((k, i) => str(`delComposition[${i}]`, k));
  for (const k of delComposition) ops.push({ type: 'del', key: `x!${k}` });
  const putIntent = list('putIntent', c.putIntent).map((x, i) => {
    const { value, record } = serialised(IntentC, `putIntent[${i}]`, 'an intent', x);
    ops.push({ type: 'put', key: `p!${str(`putIntent[${i}].id`, record.id)}`, value });
    return record;
  });
  const delIntent = list('delIntent', c.delIntent).map((k, i) => str(`delIntent[${i}]`, k));
  for (const k of delIntent) ops.push({ type: 'del', key: `p!${k}` });
  list('putOutput', c.putOutput).forEach((o, i) => {
    const what = `putOutput[${i}]`;
    if (!(o.data instanceof Uint8Array) || !Number.isSafeInteger(o.run) || !Number.isSafeInteger(o.offset))
      throw new RegistryWriteError(`cannot serialise ${what}: not an output chunk`, 'serialise');
    const value = json(what, { s: o.stream === 'stderr' ? 'e' : 'o', d: Buffer.from(o.data).toString('base64') });
    ops.push({ type: 'put', key: outKey({ ...o, task: str(`${what}.task`, o.task) }), value });
  });
  const putFunction = list('putFunction', c.putFunction).map((x, i) => {
    const { value, record } = serialised(FunctionRecordC, `putFunction[${i}]`, 'a function', x);
    ops.push({ type: 'put', key: `f!${str(`putFunction[${i}].name`, record.name)}`, value });
    return record;
  });
  const delFunction = list('delFunction', c.delFunction).map((k, i) => str(`delFunction[${i}]`, k));
  for (const k of delFunction) ops.push({ type: 'del', key: `f!${k}` });
  const events = list('events', c.events).map((d, i) => {
    const what = `events[${i}]`;
    const id = isElementId(d.id) ? d.id.key : d.id;
    if (typeof d.type !== 'string' || typeof id !== 'string' || !Number.isSafeInteger(d.revision))
      throw new RegistryWriteError(`cannot serialise ${what}: not an event`, 'serialise');
    const detail = d.detail ?? {};
    if (typeof detail !== 'object' || detail === null)
      throw new RegistryWriteError(`cannot serialise ${what}: its detail is not an object`, 'serialise');
    // `type` is always there: the JSON starts with `{"type":`, and seq and time go in front of it
    return json(what, { type: d.type, id, revision: d.revision, detail: keysOf(detail) });
  });
  return { ops, events, put, del, putComposition, delComposition, putIntent, delIntent, putFunction, delFunction };
};

/** The registry. Open with `Registry.open`. */
export class Registry implements RegistryPort {
  private readonly elements = new Map<string, Element>();
  /** Element keys in sorted order, maintained by binary insertion (list scans by prefix). */
  private readonly sorted: string[] = [];
  private readonly children = new Map<string, Set<string>>();
  private readonly users = new Map<string, Set<string>>();
  private readonly compositions = new Map<string, CompositionRecord>();
  private readonly fns = new Map<string, FunctionInfo>();
  private readonly intents = new Map<string, Intent>();
  private seq = 0;
  private instance = '';
  private queue: Pending[] = [];
  private writing = false;
  private closed = false;
  /** Per-element locks, shared by the stores and the composer. */
  readonly locks = new KeyedLock();
  /** The event hub of this registry. */
  readonly events: EventHub;

  private constructor(
    private readonly db: StringLevel,
    private readonly durability: Durability,
  ) {
    this.events = new EventHub((from, to, limit) => this.readEvents(from, to, limit), 0);
  }

  /**
   * Opens (and loads) a registry: on disk with `location`, in memory with `memory: true` (the default).
   * @example
   * const registry = await Registry.open({ location: './lessl-data' });
   * const lessl = await unwrap(openDockerBackend({ registry }));
   */
  static async open(opts: RegistryOptions = {}): Promise<Registry> {
    const db: StringLevel =
      'db' in opts && opts.db !== undefined
        ? opts.db
        : 'location' in opts && opts.location !== undefined
          ? (new Level<string, string>(opts.location, { valueEncoding: 'utf8' }) as unknown as StringLevel)
          : (new MemoryLevel<string, string>({ valueEncoding: 'utf8' }) as unknown as StringLevel);
    await db.open();
    const r = new Registry(db, opts.durability ?? 'process');
    await r.load();
    return r;
  }

  /** A random ID fixed when the database is first created: backends label their objects with it. */
  get instanceId(): string {
    return this.instance;
  }

  private async load(): Promise<void> {
    const inst = await this.db.get('m!instance');
    if (inst === undefined) {
      this.instance = randomUUID();
      await this.db.put('m!instance', this.instance);
    } else this.instance = inst;
    await this.loadIndex();
    this.events.advance(this.seq);
  }

  /** Loads the seq and the in-memory index from the database. */
  private async loadIndex(): Promise<void> {
    // The last seq is the last log key: no separate counter to write with every batch.
    for await (const k of this.db.keys({ gte: 'l!', lt: 'l"', reverse: true, limit: 1 })) this.seq = Number(k.slice(2));
    // after a compaction that removed every event, the seq goes on from the last one removed
    const compacted = Number((await this.db.get('m!compacted')) ?? 0);
    this.events.compacted(compacted);
    if (compacted > this.seq) this.seq = compacted;
    for await (const [k, v] of this.db.iterator({ gte: 'e!', lt: 'e"' })) {
      const d = ElementJsonC.decode(JSON.parse(v));
      if (E.isLeft(d)) throw new Error(`registry: corrupt element record ${k}`);
      this.indexPut(d.right);
    }
    for await (const [k, v] of this.db.iterator({ gte: 'x!', lt: 'x"' })) this.indexComposition(stored(CompositionRecordC, k, v));
    for await (const [k, v] of this.db.iterator({ gte: 'f!', lt: 'f"' })) {
      const f = stored(FunctionRecordC, k, v);
      this.fns.set(f.name, f);
    }
    for await (const [k, v] of this.db.iterator({ gte: 'p!', lt: 'p"' })) {
      const i = stored(IntentC, k, v);
      this.intents.set(i.id, i);
    }
  }

  // ---- reads (from the cache; it mirrors what is durable) ---------------

  /** The element with this ID, if any. */
  get(id: string): Element | undefined {
    return this.elements.get(id);
  }
  /** Every element, in ID order. */
  all(): Element[] {
    return this.scan('');
  }
  /** Elements whose ID starts with `prefix`, in ID order, at most `limit`. */
  scan(prefix: string, limit = Number.POSITIVE_INFINITY, pred?: (e: Element) => boolean): Element[] {
    const out: Element[] = [];
    for (let i = lowerBound(this.sorted, prefix); i < this.sorted.length && out.length < limit; i++) {
      const k = this.sorted[i] ?? '';
      if (!k.startsWith(prefix)) break;
      const e = this.elements.get(k);
      if (e !== undefined && (pred === undefined || pred(e))) out.push(e);
    }
    return out;
  }
  /** True when a write intent exists for this ID. */
  hasIntent(id: string): boolean {
    return this.intents.has(id);
  }
  /** Direct children of an element. */
  childrenOf(id: string): string[] {
    return [...(this.children.get(id) ?? [])].sort();
  }
  /** Executors whose composition includes this element. */
  usersOf(id: string): string[] {
    return [...(this.users.get(id) ?? [])].sort();
  }
  /** Every function definition, by name. */
  functions(): FunctionInfo[] {
    return [...this.fns.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** The composition of an executor. */
  composition(executor: string): CompositionRecord | undefined {
    return this.compositions.get(executor);
  }
  /** Write intents left by an interrupted create (recovered by backends on open). */
  pendingIntents(): Intent[] {
    return [...this.intents.values()];
  }
  /** Last durable seq. */
  lastSeq(): number {
    return this.seq;
  }

  /** Durable events with `from <= seq <= to`, at most `limit`. */
  async readEvents(from: number, to: number, limit: number): Promise<LesslEvent[]> {
    const out: LesslEvent[] = [];
    const it = this.db.iterator({ gte: seqKey(from), lte: seqKey(to), limit, keys: false });
    try {
      for (;;) {
        const page = await it.nextv(Math.min(limit, 1000));
        if (page.length === 0) break;
        for (const [, v] of page) if (v !== undefined) out.push(decodeEvent(v));
        if (out.length >= limit) break;
      }
    } finally {
      await it.close();
    }
    return out;
  }

  /** The kept output of a task's run, in order, from the chunk that holds byte `from` on. */
  async readOutput(task: string, run: number, from = 0): Promise<OutputRecord[]> {
    const out: OutputRecord[] = [];
    const prefix = outPrefix(task, run);
    for await (const [k, v] of this.db.iterator({ gte: prefix, lt: `${prefix}~` })) {
      const offset = Number(k.slice(prefix.length));
      const j = stored(OutputChunkC, k, v);
      const data = new Uint8Array(Buffer.from(j.d, 'base64'));
      if (offset + data.byteLength <= from) continue;
      out.push({ task, run, offset, stream: j.s === 'e' ? 'stderr' : 'stdout', data });
    }
    return out;
  }

  /** Removes the kept output of a task: every run, or the runs before `beforeRun`. */
  async clearOutput(task: string, beforeRun?: number): Promise<void> {
    if (this.closed) return;
    const prefix = outPrefix(task);
    await this.db.clear({ gte: prefix, lt: beforeRun === undefined ? `${prefix}~` : outPrefix(task, beforeRun) });
  }

  /**
   * Retention of the event log: removes the events older than `before` (by their `time`), oldest
   * first, never the newest event; answers how many. Replays from a seq that was removed answer
   * `InvalidEntry` naming `since` (see `EventHub.compactedSeq`); live delivery is not affected.
   */
  async compactEvents(before: Date): Promise<number> {
    const cutoff = before.toISOString();
    let removed = 0;
    for (;;) {
      const last = this.seq;
      const keys = await this.oldEventKeys(cutoff, last, 1000);
      if (keys.length === 0 || this.closed) return removed;
      const upTo = Number((keys.at(-1) ?? '').slice(2));
      const ops: Op[] = keys.map((key) => ({ type: 'del', key }));
      ops.push({ type: 'put', key: 'm!compacted', value: String(upTo) });
      this.events.compacted(upTo); // first: a replay running now must not read past the hole
      await this.db.batch(ops, batchOptions(this.durability));
      removed += keys.length;
    }
  }

  /** Keys of the oldest events (at most `limit`, before seq `below`) whose time is before `cutoff`. */
  private async oldEventKeys(cutoff: string, below: number, limit: number): Promise<string[]> {
    const keys: string[] = [];
    for await (const [k, v] of this.db.iterator({ gte: 'l!', lt: seqKey(below), limit })) {
      // the JSON starts with {"seq":N,"time":"<ISO>" (see `writeGroup`)
      const time = stored(EventTimeC, k, v).time;
      if (typeof time !== 'string' || time >= cutoff) break;
      keys.push(k);
    }
    return keys;
  }

  // ---- writes ---------------------------------------------------------

  /**
   * Commits one change atomically; resolves with its events once durable and published.
   *
   * The change is serialised here, before it is queued: a value that is not JSON data (a
   * BigInt, a cycle, a throwing getter, a Proxy) rejects this call alone with a
   * `RegistryWriteError` (`serialise`), and the writer never sees it. A batch the database
   * refuses rejects the calls in it (`batch`). Once a batch is durable its calls resolve,
   * whatever fails after: an index update that throws is repaired by reloading the index from
   * the database, a publication that throws is counted in `faults` (streams replay what they
   * missed from the log), and subscriber errors stay in the hub. Nothing leaves the writer
   * "writing": later changes go through and `close()` returns.
   */
  commit(change: Change): Promise<LesslEvent[]> {
    if (this.closed) return Promise.reject(new RegistryWriteError('registry is closed', 'closed'));
    let prepared: Prepared;
    try {
      this.flushHook?.('serialise');
      prepared = prepare(change);
    } catch (err) {
      return Promise.reject(
        err instanceof RegistryWriteError
          ? err
          : new RegistryWriteError(`cannot serialise the change: ${describeErr(err)}`, 'serialise', err),
      );
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ change: prepared, settled: false, resolve, reject });
      if (!this.writing) this.flush().catch(() => undefined); // flush settles every call itself
    });
  }

  /**
   * @internal Test seam (not part of the API): called at each step of a write (see
   * `FlushStep`); a throw there stands for a failure of that step.
   */
  flushHook: ((step: FlushStep) => void) | undefined;

  /** Failures after a batch was durable (index repairs, publication errors), for diagnostics. */
  faults = 0;

  private idle: Promise<void> = Promise.resolve();

  /** Writes queued changes, a group at a time, until the queue is empty. Never rejects. */
  private async flush(): Promise<void> {
    this.writing = true;
    let done!: () => void;
    this.idle = new Promise((res) => (done = res));
    try {
      while (this.queue.length > 0) {
        const group = this.queue;
        this.queue = [];
        try {
          await this.writeGroup(group);
        } catch (err) {
          // a bug of the writer itself: whoever is still waiting learns of it
          for (const p of group) fail(p, err);
        }
      }
    } finally {
      this.writing = false;
      done();
    }
  }

  /** One group: build the batch, write it, then index, publish and resolve each change. */
  private async writeGroup(group: readonly Pending[]): Promise<void> {
    let seq = this.seq;
    const time = new Date().toISOString();
    const ops: Op[] = [];
    const stamped: LesslEvent[][] = [];
    try {
      this.flushHook?.('build');
      for (const { change: c } of group) {
        ops.push(...c.ops);
        const evs: LesslEvent[] = [];
        for (const body of c.events) {
          const v = `{"seq":${++seq},"time":"${time}",${body.slice(1)}`;
          ops.push({ type: 'put', key: seqKey(seq), value: v });
          evs.push(decodeEvent(v)); // what is published is what is durable
        }
        stamped.push(evs);
      }
      this.flushHook?.('batch');
      await this.db.batch(ops, batchOptions(this.durability));
    } catch (err) {
      const e = new RegistryWriteError(`could not write the batch: ${describeErr(err)}`, 'batch', err);
      for (const p of group) fail(p, e);
      return;
    }
    this.seq = seq;
    for (const [i, p] of group.entries()) {
      const evs = stamped[i] ?? [];
      await this.afterDurable(p.change, evs);
      try {
        this.flushHook?.('resolve');
      } catch {
        this.faults++;
      }
      succeed(p, evs);
    }
  }

  /** Index and publish a durable change; neither can fail the call (see `commit`). */
  private async afterDurable(c: Prepared, evs: readonly LesslEvent[]): Promise<void> {
    try {
      this.flushHook?.('index');
      this.apply(c);
    } catch {
      this.faults++;
      await this.reload().catch(() => undefined);
    }
    try {
      this.flushHook?.('publish');
      this.events.publish(evs);
    } catch {
      this.faults++;
    }
    const last = evs.at(-1);
    if (last !== undefined) this.events.advance(last.seq);
  }

  /** Rebuilds the index from the database (after an index update failed). */
  private async reload(): Promise<void> {
    this.elements.clear();
    this.sorted.length = 0;
    this.children.clear();
    this.users.clear();
    this.compositions.clear();
    this.intents.clear();
    this.fns.clear();
    await this.loadIndex();
  }

  private apply(c: Prepared): void {
    for (const k of c.del ?? []) this.indexDel(k);
    for (const e of c.put ?? []) this.indexPut(e);
    for (const k of c.delComposition ?? []) this.indexDelComposition(k);
    for (const x of c.putComposition ?? []) this.indexComposition(x);
    for (const k of c.delIntent ?? []) this.intents.delete(k);
    for (const i of c.putIntent ?? []) this.intents.set(i.id, i);
    for (const k of c.delFunction) this.fns.delete(k);
    for (const f of c.putFunction) this.fns.set(f.name, f);
  }

  private indexPut(e: Element): void {
    const prev = this.elements.get(e.id.key);
    if (prev?.parent !== undefined && prev.parent.key !== e.parent?.key) this.children.get(prev.parent.key)?.delete(e.id.key);
    if (prev === undefined) this.sorted.splice(lowerBound(this.sorted, e.id.key), 0, e.id.key);
    this.elements.set(e.id.key, e);
    if (e.parent !== undefined) {
      let s = this.children.get(e.parent.key);
      if (s === undefined) this.children.set(e.parent.key, (s = new Set()));
      s.add(e.id.key);
    }
  }
  private indexDel(k: string): void {
    const prev = this.elements.get(k);
    if (prev === undefined) return;
    this.elements.delete(k);
    this.sorted.splice(lowerBound(this.sorted, k), 1);
    if (prev.parent !== undefined) {
      const s = this.children.get(prev.parent.key);
      s?.delete(k);
      if (s?.size === 0) this.children.delete(prev.parent.key);
    }
  }
  private indexComposition(x: CompositionRecord): void {
    this.indexDelComposition(x.executor);
    this.compositions.set(x.executor, x);
    for (const m of x.members) {
      let s = this.users.get(m.id);
      if (s === undefined) this.users.set(m.id, (s = new Set()));
      s.add(x.executor);
    }
  }
  private indexDelComposition(executor: string): void {
    const prev = this.compositions.get(executor);
    if (prev === undefined) return;
    this.compositions.delete(executor);
    for (const m of prev.members) {
      const s = this.users.get(m.id);
      s?.delete(executor);
      if (s?.size === 0) this.users.delete(m.id);
    }
  }

  /** Waits for queued writes, then closes the database. */
  async close(): Promise<void> {
    while (this.writing || this.queue.length > 0) {
      if (!this.writing) this.flush().catch(() => undefined);
      await this.idle;
    }
    this.closed = true;
    await this.db.close();
  }
}

/** Rejects a pending call, unless it was settled already. */
const fail = (p: Pending, err: unknown): void => {
  if (p.settled) return;
  p.settled = true;
  p.reject(
    err instanceof RegistryWriteError ? err : new RegistryWriteError(`the writer failed: ${describeErr(err)}`, 'batch', err),
  );
};

/** Resolves a pending call with its events, unless it was settled already. */
const succeed = (p: Pending, evs: LesslEvent[]): void => {
  if (p.settled) return;
  p.settled = true;
  p.resolve(evs);
};
