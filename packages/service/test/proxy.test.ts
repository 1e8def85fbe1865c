/**
 * The proxy to task ports on the memory backend: a daemon task runs the tiny shell's fake
 * `httpd -f -p 8080` (it answers `METHOD URL\n` and the body; `/hang` never answers, `/cut`
 * cuts its body), reached at /v1/tasks/{id}/ports/8080/... with the owner's token and through
 * shared routes /r/{route}/... with none.
 */
import { createServer } from 'node:http';
import { connect } from 'node:net';
import type { Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { FakeIO, FakeProcess } from '@lessl/memory';
import { shell, start, type Harness } from './helpers.js';

/**
 * A fake daemon `echod` on 8080: answers the request's URL and headers as JSON, and takes
 * upgrades (101, then echoes every byte back), to look at what the proxy sends.
 */
const echod = async (io: FakeIO): Promise<number> => {
  const server = createServer((req, res) => res.end(JSON.stringify({ url: req.url, headers: req.headers })));
  server.on('upgrade', (req, socket) => {
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\nx-url: ${req.url ?? ''}\r\n\r\n`);
    socket.pipe(socket);
  });
  io.listen(8080, (conn) => server.emit('connection', conn));
  await new Promise<void>((res) =>
    io.signal.aborted ? res() : io.signal.addEventListener('abort', () => res(), { once: true }),
  );
  server.close();
  return 143;
};
/**
 * A fake daemon `connd` on 8080 that numbers the connections it accepts and answers each request
 * with its connection's number; `connd.sockets` are its open connections (to close them idle).
 */
const connd = {
  accepted: 0,
  sockets: new Set<Duplex>(),
  async serve(io: FakeIO): Promise<number> {
    const server = createServer((_req, res) => res.end(String(res.socket === null ? 0 : (numbers.get(res.socket) ?? 0))));
    const numbers = new WeakMap<object, number>();
    io.listen(8080, (conn) => {
      numbers.set(conn, ++connd.accepted);
      connd.sockets.add(conn);
      conn.once('close', () => connd.sockets.delete(conn));
      server.emit('connection', conn);
    });
    await new Promise<void>((res) =>
      io.signal.aborted ? res() : io.signal.addEventListener('abort', () => res(), { once: true }),
    );
    server.close();
    return 143;
  },
};
const run: FakeProcess = (spec, io) =>
  spec.cmd.at(-1) === 'echod' ? echod(io) : spec.cmd.at(-1) === 'connd' ? connd.serve(io) : shell(spec, io);

/** Polls until `ok()` holds (at most about 2 s). */
const until = async (ok: () => boolean): Promise<void> => {
  for (let i = 0; i < 200 && !ok(); i++) await new Promise((res) => setTimeout(res, 10));
};

type Json = Record<string, unknown>;
const body = async (r: Response): Promise<Json> => (await r.json()) as Json;

/** Submits a daemon serving `httpd` on 8080 (declaring `ports`) as `token`'s; answers its id once it answers. */
const daemon = async (h: Harness, opts: { token?: string; ports?: number[]; cmd?: string[] } = {}): Promise<string> => {
  const spec = { image: 'busybox', daemon: true, ports: opts.ports ?? [8080], cmd: opts.cmd ?? ['httpd -f -p 8080'] };
  const r = await h.call('/v1/tasks', { method: 'POST', json: spec, ...(opts.token === undefined ? {} : { token: opts.token }) });
  expect(r.status).toBe(202);
  const job = await body(r);
  const id = String((job.tasks as string[])[0]);
  // serving once the task runs and its httpd listens
  for (let i = 0; i < 500; i++) {
    const t = await body(await h.call(`/v1/tasks/${id}`, opts.token === undefined ? {} : { token: opts.token }));
    if (
      t.state === 'running' &&
      (opts.cmd !== undefined ||
        (await h.call(`/v1/tasks/${id}/ports/8080/`, opts.token === undefined ? {} : { token: opts.token })).status === 200)
    )
      return id;
    await new Promise((res) => setTimeout(res, 10));
  }
  throw new Error(`task ${id} does not serve`);
};

/** The service is healthy: /healthz answers and the proxy serves a normal request. */
const healthy = async (h: Harness, id: string): Promise<void> => {
  expect((await fetch(`${h.url}/healthz`)).status).toBe(200);
  const r = await h.call(`/v1/tasks/${id}/ports/8080/ok`);
  expect([r.status, await r.text()]).toEqual([200, 'GET /ok\n']);
};

/** The proxy's open connections into tasks, from /metrics. */
const openConnections = async (h: Harness): Promise<number> => {
  const text = await (await fetch(`${h.url}/metrics`)).text();
  return Number(/^lessl_proxy_connections (\d+)/m.exec(text)?.[1] ?? 'NaN');
};

/** Polls until the proxy holds no connection into tasks. */
const drained = async (h: Harness): Promise<number> => {
  for (let i = 0; i < 200 && (await openConnections(h)) !== 0; i++) await new Promise((res) => setTimeout(res, 10));
  return openConnections(h);
};

let h: Harness;
let web: string;
beforeAll(async () => {
  // daemons' foreground commands hold their jobs: room for all of them
  // proxied requests count toward the caller's rate limit: room for the 200 at once below
  const quotas = { requestsPerSecond: 10_000, burst: 10_000 };
  h = await start({ run, concurrency: 16, proxyTimeoutMs: 300, policy: { maxProxyBodyBytes: 1 << 20, quotas } });
  web = await daemon(h);
});
afterAll(async () => {
  await h.close();
});

describe('the proxy for the owner', () => {
  test('the path after the prefix and the query reach the daemon; the bare path and a trailing slash are /', async () => {
    const paths: [string, string][] = [
      [`/v1/tasks/${web}/ports/8080/a/b?x=1&y=%20`, 'GET /a/b?x=1&y=%20\n'],
      [`/v1/tasks/${web}/ports/8080`, 'GET /\n'],
      [`/v1/tasks/${web}/ports/8080/`, 'GET /\n'],
      [`/v1/tasks/${web}/ports/8080?q=2`, 'GET /?q=2\n'],
    ];
    for (const [path, want] of paths) {
      const r = await h.call(path);
      expect([r.status, await r.text()], path).toEqual([200, want]);
    }
  });

  test('every method; POST bodies go both ways; the view shows the ports', async () => {
    const payload = 'x'.repeat(200_000);
    const r = await h.call(`/v1/tasks/${web}/ports/8080/echo`, {
      method: 'POST',
      body: payload,
      headers: { 'content-type': 'application/json' },
    });
    expect([r.status, await r.text()]).toEqual([200, `POST /echo\n${payload}`]);
    for (const method of ['PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
      const m = await h.call(`/v1/tasks/${web}/ports/8080/m`, { method, body: 'b', headers: { 'content-type': 'text/weird' } });
      expect([m.status, await m.text()]).toEqual([200, `${method} /m\nb`]);
    }
    const head = await h.call(`/v1/tasks/${web}/ports/8080/h`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect((await body(await h.call(`/v1/tasks/${web}`))).ports).toEqual([8080]);
  });

  test('headers: the Authorization header and lessl cookies never reach the daemon; hop-by-hop dropped; X-Forwarded-* set', async () => {
    const echo = await daemon(h, { cmd: ['echod'] });
    const r = await h.call(`/v1/tasks/${echo}/ports/8080/hdr?a=1`, {
      headers: { cookie: 'lessl_session=secret; theirs=1', 'x-forwarded-for': '10.0.0.9', 'x-mine': 'kept', te: 'trailers' },
    });
    const seen = (await body(r)) as { url: string; headers: Record<string, string> };
    expect(seen.url).toBe('/hdr?a=1');
    expect(seen.headers.authorization).toBeUndefined();
    expect(seen.headers.te).toBeUndefined();
    expect(seen.headers).toMatchObject({
      cookie: 'theirs=1',
      'x-mine': 'kept',
      'x-forwarded-for': '10.0.0.9, 127.0.0.1',
      'x-forwarded-proto': 'http',
      'x-forwarded-host': new URL(h.url).host,
      'x-forwarded-prefix': `/v1/tasks/${echo}/ports/8080`,
    });
    const only = await h.call(`/v1/tasks/${echo}/ports/8080/`, { headers: { cookie: 'lessl=x' } });
    expect(((await body(only)) as { headers: Record<string, string> }).headers.cookie).toBeUndefined();
  });

  test('upgrades: authenticated like requests, then spliced both ways; refused ones get a plain HTTP error', async () => {
    const echo = await daemon(h, { cmd: ['echod'] });
    const { port } = new URL(h.url);
    const upgrade = (path: string, token: string | undefined): Promise<string> =>
      new Promise((res, rej) => {
        const s = connect(Number(port), '127.0.0.1', () => {
          const auth = token === undefined ? '' : `authorization: Bearer ${token}\r\n`;
          s.write(`GET ${path} HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n${auth}\r\n`);
        });
        let got = '';
        s.on('data', (c: Buffer) => {
          got += c.toString();
          if (got.includes('\r\n\r\n') && got.startsWith('HTTP/1.1 101') && !got.includes('ping')) s.write('ping');
          if (got.endsWith('ping')) s.end();
        });
        s.on('close', () => res(got));
        s.on('error', rej);
      });
    const ok = await upgrade(`/v1/tasks/${echo}/ports/8080/ws?x=1`, h.tokens.ann);
    expect(ok).toMatch(/^HTTP\/1.1 101 /);
    expect(ok).toContain('x-url: /ws?x=1');
    expect(ok.endsWith('ping')).toBe(true);
    expect(await upgrade(`/v1/tasks/${echo}/ports/8080/ws`, h.tokens.bob)).toMatch(/^HTTP\/1.1 404 /);
    expect(await upgrade(`/v1/tasks/${echo}/ports/8080/ws`, undefined)).toMatch(/^HTTP\/1.1 401 /);
    expect(await upgrade('/healthz', h.tokens.ann)).toMatch(/^HTTP\/1.1 404 /);
    const route = await body(await h.call(`/v1/tasks/${echo}/routes`, { method: 'POST', json: { port: 8080 } }));
    expect(await upgrade(`${String(route.url)}r`, undefined)).toMatch(/^HTTP\/1.1 101 [^]*x-url: \/r[^]*ping$/);
    expect(await drained(h)).toBe(0);
    await healthy(h, web);
  });

  test("404 with the same problem for another user's task, an unknown task, an undeclared port, a bad port", async () => {
    const asBob = await h.call(`/v1/tasks/${web}/ports/8080/`, { token: h.tokens.bob });
    const unknown = await h.call('/v1/tasks/t_nosuchtask00/ports/8080/');
    const undeclared = await h.call(`/v1/tasks/${web}/ports/9090/`);
    const bad = await h.call(`/v1/tasks/${web}/ports/80x/`);
    const problems = await Promise.all([asBob, unknown, undeclared, bad].map(async (r) => [r.status, await r.text()]));
    expect(problems.map((p) => p[0])).toEqual([404, 404, 404, 404]);
    expect(new Set(problems.map((p) => p[1])).size).toBe(1);
    expect((await h.call(`/v1/tasks/${web}/ports/8080/`, { token: null })).status).toBe(401);
    // admins reach any task
    expect((await h.call(`/v1/tasks/${web}/ports/8080/adm`, { token: h.tokens.admin })).status).toBe(200);
  });

  test('a body past the policy bound is 413: by its length at once, and a chunked one as it passes the bound', async () => {
    const r = await h.call(`/v1/tasks/${web}/ports/8080/big`, { method: 'POST', body: 'z'.repeat((1 << 20) + 1) });
    expect(r.status).toBe(413);
    expect((await body(r)).tag).toBe('InvalidEntry');
    const chunk = new Uint8Array(64 << 10).fill(122);
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent++ < 20) c.enqueue(chunk);
        else c.close();
      },
    });
    const chunked = await h.call(`/v1/tasks/${web}/ports/8080/big`, {
      method: 'POST',
      body: stream,
      duplex: 'half',
    } as RequestInit);
    expect(chunked.status).toBe(413);
    expect(await drained(h)).toBe(0);
    await healthy(h, web);
  });

  test('a task that ended serves nothing: 404', async () => {
    const r = await h.call('/v1/tasks?wait=10', { method: 'POST', json: { image: 'busybox', ports: [8080], cmd: ['echo hi'] } });
    const t = await body(r);
    expect([r.status, t.state, t.ports]).toEqual([201, 'exited', [8080]]);
    expect((await h.call(`/v1/tasks/${String(t.id)}/ports/8080/`)).status).toBe(404);
  });

  test('200 concurrent requests each get their own answer; no connection is left open', async () => {
    const rs = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const r = await h.call(`/v1/tasks/${web}/ports/8080/n/${i}`, { method: 'POST', body: String(i) });
        return r.text();
      }),
    );
    expect(rs).toEqual(Array.from({ length: 200 }, (_, i) => `POST /n/${i}\n${i}`));
    expect(await drained(h)).toBe(0);
  });
});

describe('faults: the service stays healthy', () => {
  test('nothing listening on a declared port: 502', async () => {
    const quiet = await daemon(h, { ports: [8080, 8081], cmd: ['sleep 3600'] });
    const r = await h.call(`/v1/tasks/${quiet}/ports/8081/`);
    expect([r.status, (await body(r)).tag]).toEqual([502, 'Unavailable']);
    await healthy(h, web);
  });

  test('a daemon that never answers: 504 after the proxy timeout, its connection closed', async () => {
    const r = await h.call(`/v1/tasks/${web}/ports/8080/hang`);
    expect([r.status, (await body(r)).tag]).toEqual([504, 'Unavailable']);
    expect(await drained(h)).toBe(0);
    await healthy(h, web);
  });

  test('a daemon that closes mid-body: the client response is cut', async () => {
    const r = await h.call(`/v1/tasks/${web}/ports/8080/cut`);
    expect(r.status).toBe(200);
    await expect(r.text()).rejects.toThrow();
    expect(await drained(h)).toBe(0);
    await healthy(h, web);
  });

  test('a client that goes away: the daemon connection is closed', async () => {
    const ac = new AbortController();
    const pending = h.call(`/v1/tasks/${web}/ports/8080/hang`, { signal: ac.signal }).catch((e: unknown) => e);
    for (let i = 0; i < 200 && (await openConnections(h)) === 0; i++) await new Promise((res) => setTimeout(res, 5));
    expect(await openConnections(h)).toBe(1);
    ac.abort();
    await pending;
    expect(await drained(h)).toBe(0);
    await healthy(h, web);
    const m = await (await fetch(`${h.url}/metrics`)).text();
    for (const outcome of ['ok', 'timeout', 'cut', 'aborted', 'bad_gateway', 'not_found'])
      expect(m).toMatch(new RegExp(`lessl_proxy_requests_total\\{via="owner",outcome="${outcome}"\\} [1-9]`));
  });
});

describe('shared routes', () => {
  test('a route reaches the daemon with no token (an Authorization header is not forwarded); listed without its secret; revoked: 404', async () => {
    const made = await h.call(`/v1/tasks/${web}/routes`, { method: 'POST', json: { port: 8080 } });
    expect(made.status).toBe(201);
    const route = await body(made);
    expect(route).toMatchObject({ port: 8080, task: web, url: `/r/${String(route.route)}/` });
    expect(String(route.route)).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const r = await h.call(`${String(route.url)}x?y=1`, { token: null });
    expect([r.status, await r.text()]).toEqual([200, 'GET /x?y=1\n']);
    expect((await h.call(`/r/${String(route.route)}`, { token: 'lsl_somebody_elses_token' })).status).toBe(200);
    const list = await body(await h.call(`/v1/tasks/${web}/routes`));
    expect(list.items).toEqual([{ handle: route.handle, task: web, port: 8080, created: route.created }]);
    expect(JSON.stringify(list)).not.toContain(String(route.route));
    // the database holds no usable route
    expect([...h.server.db.routes.keys()].some((k) => k.includes(String(route.route)))).toBe(false);
    expect((await h.call(`/v1/tasks/${web}/routes`, { token: h.tokens.bob })).status).toBe(404);
    expect(
      (await h.call(`/v1/tasks/${web}/routes/${String(route.handle)}`, { method: 'DELETE', token: h.tokens.bob })).status,
    ).toBe(404);
    expect((await h.call(`/v1/tasks/${web}/routes/${String(route.handle)}`, { method: 'DELETE' })).status).toBe(204);
    expect((await h.call(String(route.url), { token: null })).status).toBe(404);
    expect((await h.call('/r/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/', { token: null })).status).toBe(404);
  });

  test('an undeclared port is refused; another user cannot share the task', async () => {
    const r = await h.call(`/v1/tasks/${web}/routes`, { method: 'POST', json: { port: 9090 } });
    expect([r.status, (await body(r)).keys]).toEqual([400, ['port']]);
    expect((await h.call(`/v1/tasks/${web}/routes`, { method: 'POST', json: { port: 8080 }, token: h.tokens.bob })).status).toBe(
      404,
    );
  });

  test('a route dies with its task: deleted (the routes removed, the URL 404)', async () => {
    const other = await daemon(h);
    const route = await body(await h.call(`/v1/tasks/${other}/routes`, { method: 'POST', json: { port: 8080 } }));
    expect((await h.call(String(route.url), { token: null })).status).toBe(200);
    expect((await h.call(`/v1/tasks/${other}`, { method: 'DELETE' })).status).toBe(204);
    expect((await h.call(String(route.url), { token: null })).status).toBe(404);
    expect([...h.server.db.routes.values()].filter((r) => r.task === other)).toEqual([]);
    expect((await h.call(`/v1/tasks/${other}/ports/8080/`)).status).toBe(404);
    expect((await h.call(`/v1/tasks/${other}/routes`, { method: 'POST', json: { port: 8080 } })).status).toBe(404);
    await healthy(h, web);
  });

  test('a route dies with its task: expired (the reaper removes it; the URL 404)', async () => {
    const r = await h.call('/v1/tasks', {
      method: 'POST',
      json: { image: 'busybox', daemon: true, ttl: 1, ports: [8080], cmd: ['httpd -f -p 8080'] },
    });
    const id = String(((await body(r)).tasks as string[])[0]);
    let t = await body(await h.call(`/v1/tasks/${id}`));
    while (t.state !== 'running') {
      await new Promise((res) => setTimeout(res, 10));
      t = await body(await h.call(`/v1/tasks/${id}`));
    }
    const route = await body(await h.call(`/v1/tasks/${id}/routes`, { method: 'POST', json: { port: 8080 } }));
    expect(route.url).toMatch(/^\/r\//);
    while (Date.now() <= Date.parse(String(t.expires))) await new Promise((res) => setTimeout(res, 50));
    await h.server.reap();
    expect((await body(await h.call(`/v1/tasks/${id}`))).state).toBe('expired');
    expect((await h.call(String(route.url), { token: null })).status).toBe(404);
    expect([...h.server.db.routes.values()].filter((x) => x.task === id)).toEqual([]);
    await healthy(h, web);
  });
});

describe('spare connections opened ahead', () => {
  test('a request takes the spare the one before it opened; a spare the daemon closed is not used; none outlives its task', async () => {
    const id = await daemon(h, { cmd: ['connd'] });
    const get = async (): Promise<string> => {
      const r = await h.call(`/v1/tasks/${id}/ports/8080/`);
      expect(r.status).toBe(200);
      return r.text();
    };
    await until(() => connd.accepted > 0);
    expect(await get()).toBe('1');
    // the first request's connection was new; a spare was opened ahead, and the next request takes it
    await until(() => connd.accepted === 2);
    expect(await get()).toBe('2');
    await until(() => connd.accepted === 3);
    expect(await openConnections(h)).toBe(0); // an idle spare is not a connection in use
    // the daemon closes the idle spare (as a server's idle timeout does): the next request opens a fresh connection
    for (const s of connd.sockets) s.destroy();
    expect(await get()).toBe('4');
    await until(() => connd.accepted === 5 && connd.sockets.size === 1);
    expect(connd.sockets.size).toBe(1);
    // the task ends: its spare is closed with it
    expect((await h.call(`/v1/tasks/${id}`, { method: 'DELETE' })).status).toBe(204);
    await until(() => connd.sockets.size === 0);
    expect(connd.sockets.size).toBe(0);
    expect(await drained(h)).toBe(0);
    await healthy(h, web);
  });
});
