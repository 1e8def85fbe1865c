/**
 * A user leaves while its tasks run, and the service is killed (kill -9) in the middle of the
 * removal; after a restart over the same data the leave job resumes and ends once, and nothing of
 * the user is left on the engine: no container, volume or image (`docker ps -a`, `volume ls`,
 * `image ls` by lessl labels).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import Docker from 'dockerode';
import { afterAll, expect, test } from 'vitest';
import { purge } from '@lessl/docker';

const docker = new Docker();
const TOKEN = 'lsl_leave-crash-test-admin-token';
const dir = mkdtempSync(join(tmpdir(), 'lessl-leave-crash-'));
const children = new Set<ChildProcess>();
let instance = '';

/** Starts the service in a child process (seeding dan's image and volume, or not); answers it and its URL. */
const serve = async (seed: boolean): Promise<{ child: ChildProcess; url: string }> => {
  const fixture = join(import.meta.dirname, 'fixtures', 'serve-leave.mjs');
  const env = { ...process.env, LESSL_ADMIN_TOKEN: TOKEN };
  const child = spawn(process.execPath, [fixture, dir, '2', seed ? 'seed' : ''], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  child.on('exit', () => children.delete(child));
  // its first line says where it listens; it ends without one when the start failed
  for await (const line of createInterface({ input: child.stdout as NodeJS.ReadableStream })) {
    const started = JSON.parse(line) as { url: string; registry: string };
    instance = started.registry;
    return { child, url: started.url };
  }
  throw new Error('the service exited before it listened');
};

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const call = async (
  url: string,
  path: string,
  o: { json?: unknown; method?: string; token?: string } = {},
): Promise<Json & { status: number }> => {
  const r = await fetch(`${url}${path}`, {
    method: o.method ?? (o.json === undefined ? 'GET' : 'POST'),
    headers: {
      authorization: `Bearer ${o.token ?? TOKEN}`,
      ...(o.json === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(o.json === undefined ? {} : { body: JSON.stringify(o.json) }),
    redirect: 'manual',
  });
  return { ...((await r.json()) as Json), status: r.status };
};

/** What of user dan the engine holds: containers of the service, dan's volumes and images. */
const onEngine = async (): Promise<{ containers: number; volumes: number; images: number }> => {
  const mine = [`lessl.registry=${instance}`];
  const dans = [...mine, 'lessl.ro.owner=dan'];
  return {
    containers: (await docker.listContainers({ all: true, filters: { label: mine } })).length,
    volumes: ((await docker.listVolumes({ filters: { label: dans } })).Volumes ?? []).length,
    images: (await docker.listImages({ filters: { label: dans } })).length,
  };
};

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  if (instance !== '') await purge(docker, instance);
  rmSync(dir, { recursive: true, force: true });
});

test('kill -9 in the middle of a leave: after a restart the job ends once and nothing of the user is left', async () => {
  // 1. dan (an image and a volume of its own) with two running tasks and two queued
  let { child, url } = await serve(true);
  const dan = String((await call(url, '/v1/users', { json: { name: 'dan' } })).token);
  const spec = { image: 'busybox', cmd: ['sleep 300'], resources: [{ content_type: 'text/plain', data: 'x', dest: '/opt/x' }] };
  const jobs: Json[] = [];
  for (let i = 0; i < 4; i++) jobs.push(await call(url, '/v1/tasks', { json: spec, token: dan }));
  expect(jobs.map((j) => j.status)).toEqual([202, 202, 202, 202]);
  for (const j of jobs.slice(0, 2))
    while ((await call(url, `/v1/tasks/${j.tasks[0]}`, { token: dan })).state !== 'running')
      await new Promise((r) => setTimeout(r, 50));
  expect(await onEngine()).toEqual({ containers: 2, volumes: 3, images: 1 });

  // 2. the leave starts; once it has removed something, and before it ends, kill -9
  const leave = await call(url, '/v1/users/dan', { method: 'DELETE' });
  expect([leave.status, leave.kind]).toEqual([202, 'leave']);
  expect((await call(url, '/v1/whoami', { token: dan })).status).toBe(401);
  let seen: Json;
  for (;;) {
    seen = await call(url, `/v1/jobs/${leave.id}`);
    if (seen.state !== 'running' || seen.leave.removed.tasks.length > 0) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  expect(seen.state).toBe('running'); // killed in the middle
  const before = seen.leave.removed as Record<string, string[]>;

  // 3. restart: the job resumes and ends once; its report covers everything, each ID once
  ({ child, url } = await serve(false));
  expect((await call(url, '/v1/users', { json: { name: 'dan' } })).status).toBe(409); // still leaving
  let end: Json;
  for (;;) {
    end = await call(url, `/v1/jobs/${leave.id}`);
    if (end.state !== 'running') break;
    await new Promise((r) => setTimeout(r, 100));
  }
  expect([end.status, end.state, end.error, end.leave.failed]).toEqual([200, 'done', null, []]);
  const removed = end.leave.removed as Record<string, string[]>;
  expect([...removed.tasks].sort()).toEqual(jobs.map((j) => String(j.tasks[0])).sort());
  expect([...removed.jobs].sort()).toEqual(jobs.map((j) => String(j.id)).sort());
  expect(removed).toMatchObject({ images: ['image://local/danimg'], volumes: ['volume://local/danvol'] });
  for (const [kind, ids] of Object.entries(removed)) {
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toEqual(expect.arrayContaining(before[kind] ?? []));
  }
  expect(await onEngine()).toEqual({ containers: 0, volumes: 0, images: 0 });
  // the job stays ended (nothing runs it again), and the name is free
  expect((await call(url, `/v1/jobs/${leave.id}`)).ended).toBe(end.ended);
  expect((await call(url, '/v1/users', { json: { name: 'dan' } })).status).toBe(201);
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
}, 240_000);
