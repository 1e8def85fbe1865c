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
 *   m!instance  registry instance ID
 *   p!<id>   write intent          l!<seq:16>    event (the last one gives the seq on open)
 *   o!<task>!<run:8>!<offset:12>   a chunk of a task's kept output
 */
import { randomUUID } from 'node:crypto';
import { Level } from 'level';
import { MemoryLevel } from 'memory-level';
import type { AbstractBatchOperation, AbstractLevel } from 'abstract-level';
import * as E from 'fp-ts/lib/Either.js';
import { ElementJsonC, elementToJson, type Element, type ExecutorOptions, type LesslEvent, type MemberState } from '@lessl/core';
import { EventHub } from './hub.js';
import { KeyedLock } from './lock.js';

/** A level database with string keys and values. */
export type StringLevel = AbstractLevel<string, string, string>;

/** A member as persisted. */
export interface MemberRecord {
  readonly id: string;
  readonly mountpoint?: string;
  readonly readOnly: boolean;
  readonly state: MemberState;
}

/** The persisted composition of an executor. */
export interface CompositionRecord {
  readonly executor: string;
  readonly options: ExecutorOptions;
  readonly members: readonly MemberRecord[];
}

/** A write intent: recorded before a backend makes an external object, cleared with the record. */
export interface Intent {
  readonly id: string;
  readonly started: string;
  readonly detail?: Readonly<Record<string, unknown>>;
}

/** A chunk of a task run's output, as persisted. */
export interface OutputRecord {
  readonly task: string;
  readonly run: number;
  readonly offset: number;
  readonly stream: 'stdout' | 'stderr';
  readonly data: Uint8Array;
}

/** An event before it has a seq and time. */
export type EventDraft = Omit<LesslEvent, 'seq' | 'time'>;

/** One atomic change. */
export interface Change {
  readonly put?: readonly Element[];
  readonly del?: readonly string[];
  readonly putComposition?: readonly CompositionRecord[];
  readonly delComposition?: readonly string[];
  readonly putIntent?: readonly Intent[];
  readonly delIntent?: readonly string[];
  readonly putOutput?: readonly OutputRecord[];
  readonly events?: readonly EventDraft[];
}

/** How to open a registry. */
export type RegistryOptions =
  | { readonly location: string }
  | { readonly memory: true }
  | { readonly db: StringLevel }
  | { readonly db?: undefined; readonly location?: undefined; readonly memory?: undefined };

const lowerBound = (a: readonly string[], k: string): number => {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((a[mid] as string) < k) lo = mid + 1;
    else hi = mid;
  }
  return lo;
};
const seqKey = (n: number): string => `l!${String(n).padStart(16, '0')}`;
const outPrefix = (task: string, run?: number): string =>
  run === undefined ? `o!${task}!` : `o!${task}!${String(run).padStart(8, '0')}!`;
const outKey = (o: OutputRecord): string => `${outPrefix(o.task, o.run)}${String(o.offset).padStart(12, '0')}`;

interface Pending {
  readonly change: Change;
  readonly resolve: (ev: LesslEvent[]) => void;
  readonly reject: (err: unknown) => void;
}

/** The registry. Open with `Registry.open`. */
export class Registry {
  private readonly elements = new Map<string, Element>();
  /** Element keys in sorted order, maintained by binary insertion (list scans by prefix). */
  private readonly sorted: string[] = [];
  private readonly children = new Map<string, Set<string>>();
  private readonly users = new Map<string, Set<string>>();
  private readonly compositions = new Map<string, CompositionRecord>();
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

  private constructor(private readonly db: StringLevel) {
    this.events = new EventHub((from, to, limit) => this.readEvents(from, to, limit), 0);
  }

  /** Opens (and loads) a registry: on disk with `location`, in memory with `memory: true` (the default). */
  static async open(opts: RegistryOptions = {}): Promise<Registry> {
    const db: StringLevel =
      'db' in opts && opts.db !== undefined
        ? opts.db
        : 'location' in opts && opts.location !== undefined
          ? (new Level<string, string>(opts.location, { valueEncoding: 'utf8' }) as unknown as StringLevel)
          : (new MemoryLevel<string, string>({ valueEncoding: 'utf8' }) as unknown as StringLevel);
    await db.open();
    const r = new Registry(db);
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
    // The last seq is the last log key: no separate counter to write with every batch.
    for await (const k of this.db.keys({ gte: 'l!', lt: 'l"', reverse: true, limit: 1 })) this.seq = Number(k.slice(2));
    for await (const [k, v] of this.db.iterator({ gte: 'e!', lt: 'e"' })) {
      const d = ElementJsonC.decode(JSON.parse(v));
      if (E.isLeft(d)) throw new Error(`registry: corrupt element record ${k}`);
      this.indexPut(d.right);
    }
    for await (const [, v] of this.db.iterator({ gte: 'x!', lt: 'x"' }))
      this.indexComposition(JSON.parse(v) as CompositionRecord);
    for await (const [, v] of this.db.iterator({ gte: 'p!', lt: 'p"' })) {
      const i = JSON.parse(v) as Intent;
      this.intents.set(i.id, i);
    }
    (this.events as unknown as { published: number }).published = this.seq;
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
      const k = this.sorted[i] as string;
      if (!k.startsWith(prefix)) break;
      const e = this.elements.get(k) as Element;
      if (pred === undefined || pred(e)) out.push(e);
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
        for (const [, v] of page) out.push(JSON.parse(v as string) as LesslEvent);
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
      const j = JSON.parse(v) as { s: string; d: string };
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

  // ---- writes ---------------------------------------------------------

  /** Commits one change atomically; resolves with its events once durable and published. */
  commit(change: Change): Promise<LesslEvent[]> {
    if (this.closed) return Promise.reject(new Error('registry is closed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ change, resolve, reject });
      if (!this.writing) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.writing = true;
    while (this.queue.length > 0) {
      const group = this.queue;
      this.queue = [];
      const startSeq = this.seq;
      let seq = startSeq;
      const time = new Date().toISOString();
      const ops: AbstractBatchOperation<StringLevel, string, string>[] = [];
      const stamped: LesslEvent[][] = [];
      for (const { change: c } of group) {
        for (const e of c.put ?? []) ops.push({ type: 'put', key: `e!${e.id.key}`, value: JSON.stringify(elementToJson(e)) });
        for (const k of c.del ?? []) ops.push({ type: 'del', key: `e!${k}` });
        for (const x of c.putComposition ?? []) ops.push({ type: 'put', key: `x!${x.executor}`, value: JSON.stringify(x) });
        for (const k of c.delComposition ?? []) ops.push({ type: 'del', key: `x!${k}` });
        for (const i of c.putIntent ?? []) ops.push({ type: 'put', key: `p!${i.id}`, value: JSON.stringify(i) });
        for (const k of c.delIntent ?? []) ops.push({ type: 'del', key: `p!${k}` });
        for (const o of c.putOutput ?? [])
          ops.push({
            type: 'put',
            key: outKey(o),
            value: JSON.stringify({ s: o.stream === 'stderr' ? 'e' : 'o', d: Buffer.from(o.data).toString('base64') }),
          });
        const evs: LesslEvent[] = [];
        for (const d of c.events ?? []) {
          const e: LesslEvent = { seq: ++seq, time, type: d.type, id: d.id, revision: d.revision, detail: d.detail };
          ops.push({ type: 'put', key: seqKey(e.seq), value: JSON.stringify(e) });
          evs.push(e);
        }
        stamped.push(evs);
      }
      try {
        await this.db.batch(ops);
      } catch (err) {
        for (const p of group) p.reject(err);
        continue;
      }
      this.seq = seq;
      group.forEach((p, i) => {
        this.apply(p.change);
        const evs = stamped[i] ?? [];
        this.events.publish(evs);
        p.resolve(evs);
      });
    }
    this.writing = false;
  }

  private apply(c: Change): void {
    for (const k of c.del ?? []) this.indexDel(k);
    for (const e of c.put ?? []) this.indexPut(e);
    for (const k of c.delComposition ?? []) this.indexDelComposition(k);
    for (const x of c.putComposition ?? []) this.indexComposition(x);
    for (const k of c.delIntent ?? []) this.intents.delete(k);
    for (const i of c.putIntent ?? []) this.intents.set(i.id, i);
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
    while (this.writing || this.queue.length > 0) await new Promise((r) => setTimeout(r, 1));
    this.closed = true;
    await this.db.close();
  }
}
