/**
 * Functions over REST on a real Docker engine (the service's embedded default): stdin in and
 * stdout out through the in-container agent, the headers (cold, then warm), a non-zero exit, a
 * deadline, `?async` jobs, another user's private function, metrics, and removal while an
 * invocation runs: it is killed and answers, and none of the function's containers is left.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { unwrap } from '@lessl/core';
import { busyboxRootfsBytes, purge } from '@lessl/docker';
import { createServer, type LesslServer } from '@lessl/service';

const docker = new Docker();
const TOKEN = 'lsl_functions-docker-admin-token';
let server: LesslServer;
let url = '';
let dir = '';
const tokens: Record<string, string> = {};

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const call = (path: string, init: { method?: string; json?: unknown; body?: string; token?: string } = {}): Promise<Response> =>
  fetch(`${url}${path}`, {
    method: init.method ?? 'GET',
    headers: {
      authorization: `Bearer ${init.token ?? tokens.ann ?? ''}`,
      ...(init.json === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(init.json === undefined ? {} : { body: JSON.stringify(init.json) }),
    ...(init.body === undefined ? {} : { body: init.body }),
    redirect: 'manual',
  });
const body = async (r: Response): Promise<Json> => (await r.json()) as Json;
const put = (name: string, json: unknown): Promise<Response> => call(`/v1/functions/${name}`, { method: 'PUT', json });
const invoke = (name: string, input = '', token?: string, query = ''): Promise<Response> =>
  call(`/v1/functions/${name}/invoke${query}`, { method: 'POST', body: input, ...(token === undefined ? {} : { token }) });

/** The containers of a function of this server's backend (by the function label). */
const fnContainers = async (name: string): Promise<Docker.ContainerInfo[]> =>
  (
    await docker.listContainers({
      all: true,
      filters: { label: [`lessl.registry=${server.backend.instanceId}`, 'lessl.function'] },
    })
  ).filter((c) => c.Labels['lessl.function']?.startsWith(`${name}@`) === true);

/** Waits until no container of the function is left (at most 10 s, then fails naming them). */
const gone = async (name: string): Promise<void> => {
  for (let i = 0; i < 100 && (await fnContainers(name)).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
  expect((await fnContainers(name)).map((c) => c.Labels['lessl.function'])).toEqual([]);
};

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'lessl-svc-fn-'));
  server = await createServer({ data: dir, adminToken: TOKEN });
  await unwrap(server.backend.stores.image.create({ id: 'image://local/busybox', data: await busyboxRootfsBytes() }));
  url = await server.listen();
  for (const name of ['ann', 'bob']) {
    const r = await call('/v1/users', { method: 'POST', json: { name }, token: TOKEN });
    tokens[name] = String((await body(r)).token);
  }
}, 120_000);

afterAll(async () => {
  const instance = server.backend.instanceId;
  await server.close();
  await server.backend.close();
  await purge(docker, instance);
  rmSync(dir, { recursive: true, force: true });
});

describe('functions of the service on Docker', () => {
  test('stdin in, stdout out with the headers: cold, then warm in the same container', async () => {
    const made = await put('greet', {
      image: 'busybox',
      cmd: 'cat; echo " $WHO in $(pwd)"',
      env: { WHO: 'ann' },
      pwd: '/tmp',
      reuse: 'per-function',
    });
    expect(made.status).toBe(201);
    const first = await invoke('greet', 'hello');
    expect(first.status).toBe(200);
    expect(await first.text()).toBe('hello ann in /tmp\n');
    expect(first.headers.get('x-lessl-exit-code')).toBe('0');
    expect(first.headers.get('x-lessl-reason')).toBe('exited');
    expect(first.headers.get('x-lessl-cold')).toBe('true');
    const second = await invoke('greet', 'again');
    expect(await second.text()).toBe('again ann in /tmp\n');
    expect(second.headers.get('x-lessl-cold')).toBe('false');
    expect(await fnContainers('greet')).toHaveLength(1);
  }, 60_000);

  test('a non-zero exit is 200 with its code and the size of stderr; a deadline kills', async () => {
    await put('fails', { image: 'busybox', cmd: 'echo oops >&2; exit 4' });
    const r = await invoke('fails');
    expect(r.status).toBe(200);
    expect(r.headers.get('x-lessl-exit-code')).toBe('4');
    expect(r.headers.get('x-lessl-stderr-bytes')).toBe('5');
    const logs = await body(await call('/v1/functions/fails/logs'));
    expect(logs.invocations[0]).toMatchObject({ exit_code: 4, reason: 'exited', stderr_tail: 'oops\n' });
    await put('slow', { image: 'busybox', cmd: 'sleep 30', limits: { timeout: 1 } });
    const s = await invoke('slow');
    expect(s.headers.get('x-lessl-reason')).toBe('deadline');
    expect(s.headers.get('x-lessl-exit-code')).toBe('');
  }, 60_000);

  test('?async: 202 and a job whose result holds stdout', async () => {
    await put('upper', { image: 'busybox', argv: ['tr', 'a-z', 'A-Z'] });
    const r = await invoke('upper', 'quiet please', undefined, '?async');
    expect(r.status).toBe(202);
    const job = await body(r);
    let done: Json = job;
    while (!['done', 'failed'].includes(String(done.state))) {
      await new Promise((res) => setTimeout(res, 50));
      done = await body(await call(`/v1/jobs/${job.id}`));
    }
    expect(done).toMatchObject({
      state: 'done',
      kind: 'invoke',
      result: { exit_code: 0, stdout: 'QUIET PLEASE', reason: 'exited' },
    });
  }, 60_000);

  test("another user's private function is 404; the metrics count invocations and containers", async () => {
    expect((await invoke('greet', '', tokens.bob)).status).toBe(404);
    expect((await call('/v1/functions/greet', { token: tokens.bob })).status).toBe(404);
    const m = await (await fetch(`${url}/metrics`)).text();
    expect(m).toContain('lessl_function_invocations_total{function="greet",outcome="ok",start="cold"} 1');
    expect(m).toContain('lessl_function_invocations_total{function="greet",outcome="ok",start="warm"} 1');
    expect(m).toMatch(/lessl_function_containers\{function="greet",state="idle"\} 1/);
  });

  test('a container killed from outside under an invocation: 503 Unavailable, counted; the next one succeeds', async () => {
    const cmd = 'read x; if [ "$x" = hang ]; then sleep 300; fi; echo "got $x"';
    await put('victim', { image: 'busybox', cmd, reuse: 'per-function' });
    const running = invoke('victim', 'hang\n');
    const busy = (): number => server.backend.functions.stats().find((f) => f.name === 'victim')?.containers.busy ?? 0;
    while (busy() === 0) await new Promise((r) => setTimeout(r, 20));
    const [c] = await fnContainers('victim');
    await docker.getContainer(c?.Id ?? '').kill();
    const r = await running;
    expect(r.status).toBe(503);
    expect(await body(r)).toMatchObject({ tag: 'Unavailable' });
    const m = await (await fetch(`${url}/metrics`)).text();
    expect(m).toContain('lessl_function_failures_total{function="victim",tag="Unavailable"} 1');
    const next = await invoke('victim', 'fine\n');
    expect(next.status).toBe(200);
    expect(await next.text()).toBe('got fine\n');
    expect(next.headers.get('x-lessl-version')).toBe('1');
    expect((await call('/v1/functions/victim', { method: 'DELETE' })).status).toBe(204);
    await gone('victim');
  }, 60_000);

  test('removal while an invocation runs: it is killed and answers; no container of it is left', async () => {
    await put('hang', { image: 'busybox', cmd: 'sleep 300', reuse: 'per-function' });
    const running = invoke('hang');
    const busy = (): number => server.backend.functions.stats().find((f) => f.name === 'hang')?.containers.busy ?? 0;
    while (busy() === 0) await new Promise((r) => setTimeout(r, 20));
    expect((await call('/v1/functions/hang', { method: 'DELETE' })).status).toBe(204);
    const r = await running;
    expect(r.status).toBe(200);
    expect(r.headers.get('x-lessl-reason')).toBe('killed');
    // the killed invocation's container is discarded as its invocation ends (an instant after the answer)
    await gone('hang');
    expect((await invoke('hang')).status).toBe(404);
    for (const name of ['greet', 'fails', 'slow', 'upper'])
      expect((await call(`/v1/functions/${name}`, { method: 'DELETE' })).status).toBe(204);
    for (const name of ['greet', 'fails', 'slow', 'upper']) await gone(name);
  }, 60_000);
});
