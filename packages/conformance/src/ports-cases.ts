/**
 * Port cases, on every backend that serves task ports (`supports.ports`): a daemon declaring a
 * port and serving it there (`httpd -f -p 8080`) answers an HTTP request over `tasks.connect`;
 * a port its spec does not declare is `InvalidEntry` naming `port`; a declared port nothing
 * listens on, and any port once the task was killed, are `Unavailable`; another principal gets
 * what the other task calls answer it (`PermissionDenied`, whether or not the task exists).
 */
import type { Duplex } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import { needs } from './capabilities.js';
import { assert, fails, ok, sh, STORES, uniq, newImage } from './harness.js';
import type { Case, ImageData, SuiteOptions, TestBackend } from './types.js';

const PORT = 8080;

/** Starts `spec` as the task of a new executor over `img`; answers the task's ID. */
const serve = async (l: TestBackend, img: string, spec: Record<string, unknown>): Promise<string> => {
  const task = `task://local/${uniq('port')}`;
  await ok(l.stores.task.create({ id: task, spec }));
  const h = await ok(l.composer.join(await ok(l.composer.handle(`executor://local/${uniq('x')}`)), img));
  const c = await ok(l.composer.commit(await ok(l.composer.bind(await ok(l.composer.join(h, task)), task))));
  assert.ok(c.committed, `the daemon starts: ${JSON.stringify(c)}`);
  return task;
};

/** A connection to the port once the daemon listens (it may still be starting when the commit returns). */
const connectWhenUp = async (l: TestBackend, task: string): Promise<Duplex> => {
  for (let i = 0; i < 300; i++) {
    const c = await l.tasks.connect(task, PORT)();
    if (E.isRight(c)) return c.right;
    assert.equal(c.left._tag, 'Unavailable', `connect: ${c.left.message}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`nothing listened on port ${PORT} of ${task}`);
};

/** Sends a GET over `conn` and answers the first line of the answer. */
const statusLine = (conn: Duplex): Promise<string> =>
  new Promise((resolve, reject) => {
    let got = '';
    conn.on('data', (c: Buffer) => {
      got += c.toString('latin1');
      if (got.includes('\n')) {
        resolve(got.slice(0, got.indexOf('\n')).trim());
        conn.destroy();
      }
    });
    conn.on('end', () => resolve(got.trim()));
    conn.on('error', reject);
    conn.write('GET / HTTP/1.0\r\nHost: task\r\n\r\n');
  });

export const portsCases = (o: SuiteOptions, data: ImageData): Case[] => {
  const cases: Case[] = [];
  const add = (name: string, fn: (l: TestBackend) => Promise<void>): void =>
    void cases.push(needs(o, 'ports', { name: `ports: ${name}`, fn }));

  add(
    'a daemon serving its declared port answers HTTP over tasks.connect; an undeclared port is InvalidEntry; after a kill, Unavailable',
    async (l) => {
      const img = await newImage(l, data);
      const task = await serve(l, img, { cmd: ['httpd', '-f', '-p', String(PORT)], daemon: true, ports: [PORT] });
      const line = await statusLine(await connectWhenUp(l, task));
      assert.match(line, /^HTTP\/1\.[01] \d{3}/, `an HTTP status line: ${line}`);
      const undeclared = await fails(l.tasks.connect(task, PORT + 1), 'InvalidEntry');
      assert.deepEqual([...undeclared.keys], ['port']);
      await ok(l.tasks.kill(task, { signal: 'KILL' }));
      await ok(l.tasks.wait(task));
      await fails(l.tasks.connect(task, PORT), 'Unavailable');
    },
  );

  add('a declared port nothing listens on is Unavailable', async (l) => {
    const img = await newImage(l, data);
    const task = await serve(l, img, { ...sh('sleep 60'), daemon: true, ports: [PORT] });
    await fails(l.tasks.connect(task, PORT), 'Unavailable');
    await ok(l.tasks.kill(task, { signal: 'KILL' }));
  });

  add('another principal gets PermissionDenied, whether or not the task exists', async () => {
    const l = await o.factory({ stores: STORES, authorize: (p) => p !== 'mallory' });
    try {
      const id = `task://local/${uniq('mine')}`;
      await ok(l.stores.task.create({ id, spec: { ...sh('sleep 60'), daemon: true, ports: [PORT] } }));
      for (const t of [id, `task://local/${uniq('none')}`])
        await fails(l.tasks.connect(t, PORT, { principal: 'mallory' }), 'PermissionDenied');
      await fails(l.tasks.connect(`task://local/${uniq('none')}`, PORT), 'NotFound');
    } finally {
      await l.close();
    }
  });
  return cases;
};
