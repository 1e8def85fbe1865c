/**
 * Functions on the memory backend (the kit's `FunctionRuntime` with the memory driver):
 * definitions, versions, owners and public ones, invocations with input, deadlines, removal
 * under way, logs, figures, events, and definitions kept across a reopen.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, test } from 'vitest';
import { text, unwrap, type Backend, type LesslEvent } from '@lessl/core';
import { openMemoryBackend, tinyShell, type FakeIO, type FakeProcess } from '@lessl/memory';

const IMAGE = 'image://local/fn-base';
const alice = { principal: 'alice' };
const bob = { principal: 'bob' };

/** Reads a fake process's input (the driver hands it as `stdin`). */
const readInput = async (io: FakeIO): Promise<string> => {
  const src: unknown = Reflect.get(io, 'stdin');
  let s = '';
  if (typeof src === 'object' && src !== null && Symbol.asyncIterator in src)
    for await (const c of src as AsyncIterable<Uint8Array>) s += Buffer.from(c).toString();
  return s;
};

/** `upper` echoes its input in capitals; everything else is the tiny shell. */
const run: FakeProcess = async (spec, io) => {
  if (spec.cmd[0] === 'upper') {
    io.stdout((await readInput(io)).toUpperCase());
    return 0;
  }
  return tinyShell(spec, io);
};

const open = async (location?: string): Promise<Backend> => {
  const b = await unwrap(openMemoryBackend({ run, ...(location === undefined ? {} : { registry: { location } }) }));
  if (E.isLeft(await b.stores.image.read(IMAGE)())) await unwrap(b.stores.image.create({ id: IMAGE, data: new Uint8Array([1]) }));
  return b;
};

const upper = { name: 'upper', image: IMAGE, spec: { cmd: ['upper'] } };

describe('functions (memory backend)', () => {
  test('deploy versions a function; an identical deploy keeps the version, a change adds one', async () => {
    await using b = await open();
    const v1 = await unwrap(b.functions.deploy(upper, alice));
    expect(v1).toMatchObject({ name: 'upper', owner: 'alice', version: 1, reuse: 'per-invocation', maxContainers: 4 });
    expect((await unwrap(b.functions.deploy(upper, alice))).version).toBe(1);
    const v2 = await unwrap(b.functions.deploy({ ...upper, reuse: 'per-function', concurrency: 2 }, alice));
    expect(v2).toMatchObject({ version: 2, reuse: 'per-function', concurrency: 2, createdAt: v1.createdAt });
  });

  test('invoke: input in, output out, exit codes; cold then warm with per-function reuse', async () => {
    await using b = await open();
    await unwrap(b.functions.deploy({ ...upper, reuse: 'per-function', maxContainers: 1 }, alice));
    const r1 = await unwrap(b.functions.invoke('upper', { ...alice, stdin: 'hello' }));
    expect(text(r1.stdout)).toBe('HELLO');
    expect(r1).toMatchObject({ exitCode: 0, reason: 'exited', cold: true, version: 1 });
    const r2 = await unwrap(b.functions.invoke('upper', { ...alice, stdin: new TextEncoder().encode('again') }));
    expect(r2).toMatchObject({ exitCode: 0, cold: false });
    await unwrap(b.functions.deploy({ name: 'fails', image: IMAGE, spec: { cmd: ['false'] } }, alice));
    expect(await unwrap(b.functions.invoke('fails', alice))).toMatchObject({ exitCode: 1, reason: 'exited' });
    const stats = b.functions.stats().find((s) => s.name === 'upper');
    expect(stats).toMatchObject({ invocations: 2, errors: 0, cold: 1, warm: 1, containers: { idle: 1, busy: 0 } });
  });

  test('owners: another principal gets NotFound for a private function, can invoke a public one, cannot take its name', async () => {
    await using b = await open();
    await unwrap(b.functions.deploy(upper, alice));
    expect(await b.functions.get('upper', bob)()).toMatchObject(E.left({ _tag: 'NotFound' }));
    expect(await b.functions.invoke('upper', { ...bob, stdin: 'x' })()).toMatchObject(E.left({ _tag: 'NotFound' }));
    expect(await b.functions.remove('upper', bob)()).toMatchObject(E.left({ _tag: 'NotFound' }));
    expect(await b.functions.logs('upper', bob)()).toMatchObject(E.left({ _tag: 'NotFound' }));
    expect(await b.functions.deploy(upper, bob)()).toMatchObject(E.left({ _tag: 'NameCollision' }));
    expect(await unwrap(b.functions.list(bob))).toEqual([]);
    await unwrap(b.functions.deploy({ ...upper, public: true }, alice));
    expect(text((await unwrap(b.functions.invoke('upper', { ...bob, stdin: 'pub' }))).stdout)).toBe('PUB');
    expect(await b.functions.remove('upper', bob)()).toMatchObject(E.left({ _tag: 'PermissionDenied' }));
    expect(await b.functions.logs('upper', bob)()).toMatchObject(E.left({ _tag: 'PermissionDenied' }));
  });

  test('bad definitions are InvalidEntry naming the field; a missing image is NotFound; nothing is stored', async () => {
    await using b = await open();
    const bad = async (u: unknown): Promise<unknown> => b.functions.deploy(u, alice)();
    expect(await bad({ ...upper, name: '../x' })).toMatchObject(E.left({ _tag: 'InvalidEntry', keys: ['name'] }));
    expect(await bad({ ...upper, spec: { cmd: 'x' } })).toMatchObject(E.left({ _tag: 'InvalidEntry' }));
    expect(await bad({ ...upper, spec: { cmd: ['x'], daemon: true } })).toMatchObject(
      E.left({ _tag: 'InvalidEntry', keys: ['spec.daemon'] }),
    );
    expect(await bad({ ...upper, concurrency: 0 })).toMatchObject(E.left({ _tag: 'InvalidEntry', keys: ['concurrency'] }));
    expect(await bad({ ...upper, minContainers: 3, maxContainers: 2 })).toMatchObject(E.left({ _tag: 'InvalidEntry' }));
    expect(await bad({ ...upper, extra: 1 })).toMatchObject(E.left({ _tag: 'InvalidEntry', keys: ['extra'] }));
    expect(await bad({ ...upper, image: 'image://local/none' })).toMatchObject(E.left({ _tag: 'NotFound' }));
    expect(await b.functions.invoke('upper', { ...alice, stdin: 42 as never })()).toMatchObject(E.left({ _tag: 'NotFound' }));
    expect(await unwrap(b.functions.list(alice))).toEqual([]);
  });

  test('a deadline ends an invocation with reason deadline; removal kills invocations under way', async () => {
    await using b = await open();
    await unwrap(
      b.functions.deploy({ name: 'slow', image: IMAGE, spec: { cmd: ['sleep', '30'], limits: { deadlineMs: 100 } } }, alice),
    );
    expect(await unwrap(b.functions.invoke('slow', alice))).toMatchObject({ reason: 'deadline', exitCode: null });
    await unwrap(b.functions.deploy({ name: 'slow2', image: IMAGE, spec: { cmd: ['sleep', '30'] } }, alice));
    const pending = b.functions.invoke('slow2', alice)();
    await new Promise((r) => setTimeout(r, 50));
    await unwrap(b.functions.remove('slow2', alice));
    expect(await pending).toMatchObject(E.right({ reason: 'killed' }));
    expect(await b.functions.get('slow2', alice)()).toMatchObject(E.left({ _tag: 'NotFound' }));
  });

  test('input of the wrong type is InvalidEntry naming stdin; a caller abort is Aborted', async () => {
    await using b = await open();
    await unwrap(b.functions.deploy({ name: 'slow', image: IMAGE, spec: { cmd: ['sleep', '30'] } }, alice));
    expect(await b.functions.invoke('slow', { ...alice, stdin: 42 as never })()).toMatchObject(
      E.left({ _tag: 'InvalidEntry', keys: ['stdin'] }),
    );
    const ac = new AbortController();
    const p = b.functions.invoke('slow', { ...alice, signal: ac.signal })();
    setTimeout(() => ac.abort('enough'), 30);
    expect(await p).toMatchObject(E.left({ _tag: 'Aborted' }));
  });

  test('events: deployed, invoked (no bytes), deleted; logs keep the newest invocations with a stderr tail', async () => {
    await using b = await open();
    const seen: LesslEvent[] = [];
    const unsubscribe = b.events.subscribe({}, (e) => void seen.push(e));
    await unwrap(b.functions.deploy({ name: 'err', image: IMAGE, spec: { cmd: ['sh', '-c', 'echo oops >&2'] } }, alice));
    const r = await unwrap(b.functions.invoke('err', { ...alice, stdin: 'secret input' }));
    const logs = await unwrap(b.functions.logs('err', alice));
    expect(logs[0]).toMatchObject({ id: r.id, version: 1, reason: 'exited' });
    await unwrap(b.functions.remove('err', alice));
    await new Promise((res) => setTimeout(res, 20));
    unsubscribe();
    const fn = seen.filter((e) => e.id.key === 'function://err');
    expect(fn.map((e) => e.type)).toEqual(['deployed', 'invoked', 'deleted']);
    expect(fn[1]?.detail).toMatchObject({ invocation: r.id, version: 1, exitCode: r.exitCode, cold: true });
    expect(JSON.stringify(fn)).not.toContain('secret input');
  });

  test('definitions are kept in the registry across a reopen', async () => {
    const location = mkdtempSync(join(tmpdir(), 'lessl-fn-'));
    {
      await using b = await open(location);
      await unwrap(b.functions.deploy(upper, alice));
    }
    await using again = await open(location);
    expect(await unwrap(again.functions.get('upper', alice))).toMatchObject({ name: 'upper', version: 1, owner: 'alice' });
    expect(text((await unwrap(again.functions.invoke('upper', { ...alice, stdin: 'back' }))).stdout)).toBe('BACK');
  });
});
