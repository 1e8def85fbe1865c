/**
 * Refresh and preload (docs/pool.md): an image element's source fetched again moves the element
 * to new content atomically, while a task started before keeps reading the old; unchanged content
 * publishes nothing; an aborted refresh leaves nothing; the old image goes once nothing uses it
 * (purge, delete). Sources: the local registry on 127.0.0.1:5000 and an http server on loopback.
 */
import { createServer, type Server } from 'node:http';
import Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { sha256, text, unwrap, type LesslEvent, type Progress } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge, type DockerBackend } from '@lessl/docker';
import { Registry } from '@lessl/level';
import { closeLoopback, listenLoopback, eventually, n, startDaemon, tarOf } from './support.js';

const docker = new Docker();
let l: DockerBackend;
/** The registry under `l` (opened here, so the test can change a record underneath). */
let registry: Registry;
let bb = ''; // a plain busybox image (no lessl labels), the base of the test contents
const made: string[] = [];
let server: Server;
let url = '';
/** What the loopback server answers at /image.tar (a docker save archive); /slow sends a part and stalls. */
let served: Buffer = Buffer.alloc(0);

/** A Docker image: busybox with /v.txt holding `content` (no tag, no lessl labels). */
const version = async (content: string): Promise<string> => {
  const c = await docker.createContainer({ Image: bb, Cmd: ['true'] });
  await c.putArchive(Buffer.from(await tarOf({ 'v.txt': content })), { path: '/' });
  const r = (await c.commit({ comment: content })) as { Id: string };
  await c.remove({ force: true });
  made.push(r.Id);
  return r.Id;
};
const saveOf = async (imageId: string): Promise<Buffer> => {
  const parts: Buffer[] = [];
  for await (const c of (await docker.getImage(imageId).get()) as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts);
};
const push = async (imageId: string, repo: string): Promise<void> => {
  await docker.getImage(imageId).tag({ repo, tag: 'latest' });
  const s = await docker.getImage(`${repo}:latest`).push({ authconfig: { serveraddress: '127.0.0.1:5000' } });
  await new Promise<void>((res, rej) => docker.modem.followProgress(s, (e) => (e ? rej(e) : res())));
  await docker.getImage(`${repo}:latest`).remove(); // the local copy goes: the element must pull it
};
const exists = (imageId: string): Promise<boolean> =>
  docker
    .getImage(imageId)
    .inspect()
    .then(
      () => true,
      () => false,
    );
const events = (b: DockerBackend, id: string): { seen: LesslEvent[]; off: () => void } => {
  const seen: LesslEvent[] = [];
  const off = b.events.subscribe({}, (e) => {
    if (e.id.key === id) seen.push(e);
  });
  return { seen, off };
};
/** Runs `cat /v.txt` inside a running daemon executor (an exec into its container). */
const readIn = async (x: string): Promise<string> => {
  const task = `task://local/${n('read')}`;
  await unwrap(l.stores.task.create({ id: task, spec: { cmd: ['cat', '/v.txt'] } }));
  const h = await unwrap(l.composer.handle(x));
  const r = await unwrap(l.composer.commit(await unwrap(l.composer.bind(await unwrap(l.composer.join(h, task)), task))));
  if (!r.committed) throw new Error(r.error.message);
  return text((await unwrap(l.tasks.wait(task))).stdout);
};
const readNew = async (image: string): Promise<string> =>
  text((await unwrap(l.run({ image, spec: { cmd: ['cat', '/v.txt'] } }))).stdout);
const stop = async (x: string): Promise<void> => {
  await unwrap(l.composer.commit(await unwrap(l.composer.unbind(await unwrap(l.composer.handle(x))))));
  await unwrap(l.stores.executor.delete(x));
};

beforeAll(async () => {
  registry = await Registry.open({ memory: true });
  l = await unwrap(openDockerBackend({ registry }));
  const repo = n('lessl-test-bb');
  const s = await docker.importImage(
    Buffer.from(await busyboxRootfsBytes()) as unknown as NodeJS.ReadableStream,
    {
      repo,
      tag: 'latest',
    } as object,
  );
  await new Promise<void>((res, rej) => docker.modem.followProgress(s, (e) => (e ? rej(e) : res())));
  bb = `${repo}:latest`;
  server = createServer((req, res) => {
    if (req.url === '/image.tar') res.end(served);
    else if (req.url === '/slow') {
      res.writeHead(200, { 'content-length': String(served.length) });
      res.write(served.subarray(0, 64 * 1024)); // then nothing more until the client goes
    } else res.writeHead(404).end();
  });
  url = await listenLoopback(server);
});
afterAll(async () => {
  await closeLoopback(server);
  await l.close();
  await purge(docker, l.instanceId);
  for (const i of made)
    await docker
      .getImage(i)
      .remove({ force: true })
      .catch(() => undefined);
  await docker
    .getImage(bb)
    .remove({ force: true })
    .catch(() => undefined);
});

describe('refresh', () => {
  test('registry: v2 pushed under the same tag moves the element; a task started before keeps v1, a new one reads v2; purge then removes v1', async () => {
    const repo = `127.0.0.1:5000/lessl-test/${n('fresh')}`;
    await push(await version('v1'), repo);
    const id = `image://local/${n('reg')}`;
    const el = await unwrap(l.stores.image.create({ id, options: { source: { type: 'registry', ref: `${repo}:latest` } } }));
    expect(el.attributes.source).toEqual({ type: 'registry', ref: `${repo}:latest` });
    const v1 = String(el.attributes.imageId);
    const { x } = await startDaemon(l, id);
    await push(await version('v2'), repo);
    const { seen, off } = events(l, id);
    const progress: Progress[] = [];
    const r = await unwrap(l.refresh(id, { onProgress: (p) => progress.push(p) }));
    off();
    expect(r).toMatchObject({ id, changed: true, previousImageId: v1, revision: 2 });
    expect(progress.some((p) => p.phase === 'pull')).toBe(true);
    expect(seen.map((e) => [e.type, e.revision, e.detail.refreshed])).toEqual([['modified', 2, true]]);
    const now = await unwrap(l.stores.image.read(id));
    expect(now.attributes.imageId).toBe(r.imageId);
    expect(now.attributes.stale).toEqual([v1]); // the daemon's container still uses it
    expect((await docker.getImage(String(now.attributes.ref)).inspect()).Id).toBe(r.imageId);
    expect(await readIn(x)).toBe('v1');
    expect(await readNew(id)).toBe('v2');
    // unchanged now: no event, no new revision
    const { seen: again, off: off2 } = events(l, id);
    expect(await unwrap(l.refresh(id))).toMatchObject({ changed: false, imageId: r.imageId, revision: 2 });
    off2();
    expect(again).toEqual([]);
    await stop(x);
    expect(await exists(v1)).toBe(true);
    expect(await eventually(async () => (await unwrap(l.purge({}))).removed.length === 0 && !(await exists(v1)))).toBe(true);
    expect((await unwrap(l.stores.image.read(id))).attributes.stale).toBeUndefined();
    await unwrap(l.stores.image.delete(id));
    expect(await exists(String(now.attributes.ref))).toBe(false); // (the pulled tag of the registry's is not the element's)
    made.push(r.imageId);
  });

  test('url: a changed archive moves the element; unchanged publishes nothing; delete removes the old content a task kept', async () => {
    const v1 = await version('u1');
    served = await saveOf(v1);
    const id = `image://local/${n('url')}`;
    const el = await unwrap(l.stores.image.create({ id, options: { source: { type: 'url', url: `${url}/image.tar` } } }));
    expect(el.attributes.imageId).toBe(v1);
    expect(String(el.attributes.sourceDigest)).toMatch(/^sha256:/);
    const { seen: none, off: off1 } = events(l, id);
    expect(await unwrap(l.refresh(id))).toMatchObject({ changed: false, imageId: v1, revision: 1 });
    off1();
    expect(none).toEqual([]);
    const { x } = await startDaemon(l, id);
    const { seen, off } = events(l, id);
    const v2 = await version('u2');
    served = await saveOf(v2);
    const progress: Progress[] = [];
    const r = await unwrap(l.refresh(id, { onProgress: (p) => progress.push(p) }));
    off();
    expect(r).toMatchObject({ changed: true, imageId: v2, previousImageId: v1, revision: 2 });
    expect(progress.some((p) => p.phase === 'download')).toBe(true);
    expect(seen.map((e) => e.type)).toEqual(['modified']);
    expect(await readIn(x)).toBe('u1');
    expect(await readNew(id)).toBe('u2');
    const inUse = await l.stores.image.delete(id)();
    expect(E.isLeft(inUse) && inUse.left._tag).toBe('InUse'); // the daemon's executor holds it
    await stop(x);
    await unwrap(l.stores.image.delete(id));
    expect(await eventually(async () => !(await exists(v1)) && !(await exists(v2)))).toBe(true);
  });

  test('an abort mid-download answers Aborted and leaves nothing: same element, no temporary image, no event', async () => {
    const v1 = await version('a1');
    served = await saveOf(v1);
    const id = `image://local/${n('abort')}`;
    const el = await unwrap(l.stores.image.create({ id, options: { source: { type: 'url', url: `${url}/image.tar` } } }));
    served = await saveOf(await version('a2'));
    // the source now sends part of the new archive and stalls (the record's source is pointed at /slow)
    await registry.commit({ put: [{ ...el, attributes: { ...el.attributes, source: { type: 'url', url: `${url}/slow` } } }] });
    const { seen, off } = events(l, id);
    const ac = new AbortController();
    const started = Date.now();
    const p = l.refresh(id, { signal: ac.signal })();
    setTimeout(() => ac.abort(), 500);
    const r = await p;
    off();
    expect(E.isLeft(r) && r.left._tag).toBe('Aborted');
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(seen).toEqual([]);
    const now = await unwrap(l.stores.image.read(id));
    expect(now.revision).toBe(el.revision);
    expect(now.attributes.imageId).toBe(v1);
    const ref = String(now.attributes.ref);
    const tags = (await docker.listImages()).flatMap((i) => i.RepoTags ?? []);
    expect(tags.filter((t) => t.startsWith(`${ref}-r`))).toEqual([]);
    // with a checksum too: the part it got is not bad content, the caller stopped it
    const checked = { type: 'url', url: `${url}/slow`, checksum: sha256(served) };
    await registry.commit({ put: [{ ...now, attributes: { ...now.attributes, source: checked } }] });
    const again = await l.refresh(id, { signal: AbortSignal.timeout(500) })();
    expect(E.isLeft(again) && again.left._tag).toBe('Aborted');
    await unwrap(l.stores.image.delete(id));
  });

  test('warm pool: containers of the old content go, the profile starts the new content and serves it', async () => {
    served = await saveOf(await version('w1'));
    const id = `image://local/${n('warm')}`;
    const el = await unwrap(l.stores.image.create({ id, options: { source: { type: 'url', url: `${url}/image.tar` } } }));
    await unwrap(l.pool.configure([{ image: id, min: 1 }]));
    const poolImages = async (): Promise<string[]> =>
      (
        await docker.listContainers({
          all: true,
          filters: { label: [`lessl.registry=${l.instanceId}`, 'lessl.pool'] },
        })
      ).map((c) => c.ImageID);
    expect(await poolImages()).toEqual([el.attributes.imageId]);
    const v2 = await version('w2');
    served = await saveOf(v2);
    await unwrap(l.refresh(id));
    // (a container is listed once created; it is ready once started)
    expect(await eventually(async () => (await poolImages()).join() === v2 && l.pool.stats().profiles[0]?.ready === 1)).toBe(
      true,
    );
    const hits = l.pool.stats().hits;
    expect(await readNew(id)).toBe('w2');
    expect(l.pool.stats().hits).toBe(hits + 1);
    await unwrap(l.pool.configure([]));
    await unwrap(l.stores.image.delete(id));
  });

  test('typed errors: no refetchable source is Unsupported; a missing element NotFound; not an image InvalidEntry', async () => {
    const id = `image://local/${n('data')}`;
    await unwrap(l.stores.image.create({ id, data: await busyboxRootfsBytes() }));
    const r = await l.refresh(id)();
    expect(E.isLeft(r) && r.left._tag).toBe('Unsupported');
    const missing = await l.refresh(`image://local/${n('nope')}`)();
    expect(E.isLeft(missing) && missing.left._tag).toBe('NotFound');
    const vol = await l.refresh('volume://local/x')();
    expect(E.isLeft(vol) && vol.left._tag).toBe('InvalidEntry');
    await unwrap(l.stores.image.delete(id));
  });
});

describe('preload', () => {
  test('creates missing images from their source, answers present ones, names failures; another host is InvalidEntry', async () => {
    served = await saveOf(await version('p1'));
    const have = `image://local/${n('have')}`;
    await unwrap(l.stores.image.create({ id: have, data: await busyboxRootfsBytes() }));
    const fresh = `image://local/${n('pre')}`;
    const missing = `image://local/${n('missing')}`;
    const r = await unwrap(
      l.preload([have, { id: fresh, source: { type: 'url', url: `${url}/image.tar` } }, missing], { hosts: ['local'] }),
    );
    expect(r.map((x) => [x.id, x.done])).toEqual([
      [have, 'present'],
      [fresh, 'created'],
      [missing, 'failed'],
    ]);
    expect(r[2]?.done === 'failed' && r[2].error._tag).toBe('NotFound');
    expect(await readNew(fresh)).toBe('p1');
    const other = await l.preload([have], { hosts: ['h2'] })();
    expect(E.isLeft(other) && other.left._tag).toBe('InvalidEntry');
    await unwrap(l.stores.image.delete(have));
    await unwrap(l.stores.image.delete(fresh));
  });

  test('an element whose Docker image is gone is fetched again', async () => {
    const b = await unwrap(openDockerBackend({ watch: false }));
    try {
      served = await saveOf(await version('g1'));
      const id = `image://local/${n('gone')}`;
      const el = await unwrap(b.stores.image.create({ id, options: { source: { type: 'url', url: `${url}/image.tar` } } }));
      await docker.getImage(String(el.attributes.imageId)).remove({ force: true });
      const r = await unwrap(b.preload([id]));
      expect(r).toMatchObject([{ id, done: 'fetched', host: 'local' }]);
      expect(await exists(String(el.attributes.imageId))).toBe(true);
      expect(text((await unwrap(b.run({ image: id, spec: { cmd: ['cat', '/v.txt'] } }))).stdout)).toBe('g1');
    } finally {
      await b.close();
      await purge(docker, b.instanceId);
    }
  });
});
