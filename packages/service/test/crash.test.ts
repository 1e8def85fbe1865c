/**
 * kill -9 of the service with jobs queued and running, then a restart over the same data: every
 * accepted job ends exactly once (each command bound once, one `unbound` each), none is lost,
 * and no container is left; the execs of one daemon resume one at a time, in submission order, and
 * the first failure stops the rest.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import Docker from 'dockerode';
import { Level } from 'level';
import { afterAll, expect, test } from 'vitest';
import { purge } from '@lessl/docker';
import type { LesslEvent } from '@lessl/core';
import { Registry } from '@lessl/level';

const docker = new Docker();
const TOKEN = 'lsl_crash-test-admin-token';
const dir = mkdtempSync(join(tmpdir(), 'lessl-crash-'));
const children = new Set<ChildProcess>();
let instance = '';

/** Starts the service in a child process (running `concurrency` jobs at once); answers it and its URL. */
const serve = async (concurrency = 1): Promise<{ child: ChildProcess; url: string }> => {
  const child = spawn(process.execPath, [join(import.meta.dirname, 'fixtures', 'serve.mjs'), dir, String(concurrency)], {
    env: { ...process.env, LESSL_ADMIN_TOKEN: TOKEN },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`the service exited (${String(code)}) before it listened`)));
  });
  const { url, registry } = JSON.parse(line) as { url: string; registry: string };
  instance = registry;
  return { child, url };
};

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const call = async (url: string, path: string, json?: unknown, method = 'POST'): Promise<Json & { status: number }> => {
  const r = await fetch(`${url}${path}`, {
    method: json === undefined ? 'GET' : method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(json === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(json === undefined ? {} : { body: JSON.stringify(json) }),
    redirect: 'manual',
  });
  return { ...((await r.json()) as Json), status: r.status };
};

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  if (instance !== '') await purge(docker, instance);
  rmSync(dir, { recursive: true, force: true });
});

test('kill -9 with jobs queued and running; after a restart every job ends exactly once and no container is left', async () => {
  // 1. a service running one job at a time; three jobs: one running, two queued
  let { child, url } = await serve();
  const jobs: Json[] = [];
  for (const i of [1, 2, 3]) jobs.push(await call(url, '/v1/tasks', { image: 'busybox', cmd: [`sleep 2`, `echo after${i}`] }));
  expect(jobs.map((j) => j.status)).toEqual([202, 202, 202]);
  for (;;) {
    const t = await call(url, `/v1/tasks/${jobs[0]?.tasks[0]}`);
    if (t.commands[0].state === 'running') break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const queued = await call(url, `/v1/jobs/${jobs[2]?.id}`);
  expect(queued.state).toBe('queued');

  // 2. kill -9: the first job's command keeps running in its container (it writes nothing: Docker keeps no
  //    exec output for a client that died, see docs/service.md)
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));

  // 3. restart over the same data: the running job resumes, the queued ones run
  ({ child, url } = await serve());
  const final: Json[] = [];
  for (const j of jobs)
    for (;;) {
      const r = await call(url, `/v1/jobs/${j.id}`);
      if (r.status === 303 || ['failed', 'cancelled'].includes(r.state)) {
        final.push(r);
        break;
      }
      await new Promise((res) => setTimeout(res, 100));
    }
  expect(final.map((j) => [j.status, j.state])).toEqual([
    [303, 'done'],
    [303, 'done'],
    [303, 'done'],
  ]);
  for (const [i, j] of jobs.entries()) {
    const t = await call(url, `/v1/tasks/${j.tasks[0]}`);
    expect(t.state).toBe('exited');
    expect(t.commands.map((c: Json) => [c.state, c.exitCode])).toEqual([
      ['exited', 0],
      ['exited', 0],
    ]);
    expect(t.commands[1].output).toBe(`after${i + 1}\n`);
  }
  expect(await docker.listContainers({ all: true, filters: { label: [`lessl.registry=${instance}`] } })).toEqual([]);

  // 4. exactly once, from the durable event log: each command bound once and unbound once
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  const events = await eventLog();
  for (const j of jobs)
    for (const c of ['c0', 'c1']) {
      const id = `task://local/${j.tasks[0]}.${c}`;
      const of = (type: string) => events.filter((e) => e.type === type && (e.id.key === id || e.detail.task === id)).length;
      expect([id, of('bound'), of('unbound')]).toEqual([id, 1, 1]);
    }
}, 120_000);

/** The durable event log of the stopped service. */
const eventLog = async (): Promise<LesslEvent[]> => {
  const db = new Level<string, string>(join(dir, 'db'), { valueEncoding: 'utf8' });
  const reg = await Registry.open({ db: db.sublevel('reg') as never });
  const events = await reg.readEvents(1, reg.lastSeq(), 1_000_000);
  await reg.close();
  await db.close();
  return events;
};

/** Polls each job until it is final; answers [status, state] of each. */
const settleAll = async (url: string, jobs: readonly Json[]): Promise<[number, string][]> => {
  const final: [number, string][] = [];
  for (const j of jobs)
    for (;;) {
      const r = await call(url, `/v1/jobs/${j.id}`);
      if (r.status === 303 || ['failed', 'cancelled'].includes(r.state)) {
        final.push([r.status, r.state]);
        break;
      }
      await new Promise((res) => setTimeout(res, 100));
    }
  return final;
};

test('kill -9 with an exec running and more queued in one daemon; after a restart they run one at a time, in order, and the first failure stops the rest', async () => {
  // 1. a daemon; a long exec running, seven more behind it (the third fails); several jobs running at once
  let { child, url } = await serve(6);
  const t = await call(url, '/v1/tasks?wait=60', { image: 'busybox', daemon: true, cmd: ['echo up'] });
  expect(t.status).toBe(201);
  const cmds = ['sleep 2', 'echo 2', 'exit 3', 'echo 4', 'echo 5', 'echo 6', 'echo 7', 'echo 8'];
  const jobs: Json[] = [];
  for (const cmd of cmds) jobs.push(await call(url, `/v1/tasks/${t.id}`, { cmd: [cmd] }, 'PUT'));
  expect(jobs.map((j) => j.status)).toEqual(cmds.map(() => 202));
  for (;;) {
    const v = await call(url, `/v1/tasks/${t.id}`);
    if (v.commands[1].state === 'running') break;
    await new Promise((r) => setTimeout(r, 50));
  }

  // 2. kill -9, 3. restart over the same data
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  ({ child, url } = await serve(6));
  expect(await settleAll(url, jobs)).toEqual(cmds.map(() => [303, 'done']));
  const v = await call(url, `/v1/tasks/${t.id}`);
  expect(v.commands.map((c: Json) => [c.cmd, c.state, c.exitCode])).toEqual([
    ['echo up', 'exited', 0],
    ['sleep 2', 'exited', 0],
    ['echo 2', 'exited', 0],
    ['exit 3', 'exited', 3],
    ...cmds.slice(3).map((cmd) => [cmd, 'skipped', null]),
  ]);
  expect(v.commands[2].output).toBe('2\n');
  expect(
    (await fetch(`${url}/v1/tasks/${t.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${TOKEN}` } })).status,
  ).toBe(204);

  // 4. from the durable event log: each command bound once, ended before the next one was bound
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  const prefix = `task://local/${t.id}.c`;
  const order: string[] = [];
  for (const e of await eventLog()) {
    const key = [e.id.key, e.detail.task].find((k) => typeof k === 'string' && k.startsWith(prefix)) as string | undefined;
    if (key !== undefined && (e.type === 'bound' || e.type === 'unbound'))
      order.push(`${e.type === 'bound' ? 's' : 'e'}${key.slice(prefix.length)}`);
  }
  expect(order).toEqual(['s0', 'e0', 's1', 'e1', 's2', 'e2', 's3', 'e3']);
}, 120_000);
