/**
 * Task ports on the memory backend: a daemon declaring `ports` serves them (the tiny shell's fake
 * `httpd`), `tasks.connect` reaches them through the backend, and the refusals are typed.
 */
import { request } from 'node:http';
import type { Duplex } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, test } from 'vitest';
import { unwrap, type Backend } from '@lessl/core';
import { openMemoryBackend } from '@lessl/memory';

const IMAGE = 'image://local/ports-base';

const open = async (): Promise<Backend> => {
  const b = await unwrap(openMemoryBackend());
  await unwrap(b.stores.image.create({ id: IMAGE, data: new Uint8Array([1]) }));
  return b;
};

/** Starts a daemon `httpd -p 8080` declaring port 8080; answers its task ID. */
const serve = async (b: Backend, name: string): Promise<string> => {
  const task = `task://local/${name}`;
  await unwrap(b.stores.task.create({ id: task, spec: { cmd: ['httpd', '-f', '-p', '8080'], daemon: true, ports: [8080] } }));
  const h0 = await unwrap(b.composer.handle(`executor://local/${name}-x`));
  const h1 = await unwrap(b.composer.join(h0, IMAGE));
  const h2 = await unwrap(b.composer.bind(await unwrap(b.composer.join(h1, task)), task));
  await unwrap(b.composer.commit(h2));
  return task;
};

/** One HTTP request over a connection: status and body. */
const get = (conn: Duplex, path: string, body?: string): Promise<{ status: number; body: string }> =>
  new Promise((res, rej) => {
    const req = request(
      { createConnection: () => conn, path, method: body === undefined ? 'GET' : 'POST', host: 'task' },
      (r) => {
        let s = '';
        r.setEncoding('utf8');
        r.on('data', (c: string) => (s += c));
        r.on('end', () => res({ status: r.statusCode ?? 0, body: s }));
        r.on('error', rej);
      },
    );
    req.on('error', rej);
    req.end(body);
  });

describe('task ports (memory backend)', () => {
  test('connect reaches the port a running daemon serves; HTTP goes both ways', async () => {
    await using b = await open();
    expect(b.supports.ports).toBe(true);
    const task = await serve(b, 'web');
    const r = await get(await unwrap(b.tasks.connect(task, 8080)), '/hello?x=1', 'payload');
    expect(r).toEqual({ status: 200, body: 'POST /hello?x=1\npayload' });
  });

  test('refusals: an undeclared port and a bad one are InvalidEntry naming port; nothing listening, or an ended task, Unavailable', async () => {
    await using b = await open();
    const task = await serve(b, 'web2');
    for (const port of [9090, 0, 70000, 1.5]) {
      const e = await b.tasks.connect(task, port)();
      expect(E.isLeft(e) && e.left).toMatchObject({ _tag: 'InvalidEntry', keys: ['port'] });
    }
    const quiet = 'task://local/quiet';
    await unwrap(b.stores.task.create({ id: quiet, spec: { cmd: ['sleep', '60'], daemon: true, ports: [8080] } }));
    const hq = await unwrap(b.composer.join(await unwrap(b.composer.handle('executor://local/q')), IMAGE));
    const h = await unwrap(b.composer.bind(await unwrap(b.composer.join(hq, quiet)), quiet));
    await unwrap(b.composer.commit(h));
    expect(await b.tasks.connect(quiet, 8080)()).toMatchObject({ left: { _tag: 'Unavailable' } });
    const conn = await unwrap(b.tasks.connect(task, 8080));
    const closed = new Promise((res) => conn.once('close', res));
    await unwrap(b.tasks.kill(task, { signal: 'KILL' }));
    await closed;
    expect(await b.tasks.connect(task, 8080)()).toMatchObject({ left: { _tag: 'Unavailable' } });
    expect(await b.tasks.connect('task://local/none', 8080)()).toMatchObject({ left: { _tag: 'NotFound' } });
  });
});
