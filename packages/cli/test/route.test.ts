/**
 * `lessl route add|ls|rm` and `lessl run` with ports: a daemon serving the tiny shell's fake
 * `httpd` on a declared port, shared through a route, reached with no token, revoked.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { start, type Harness } from './harness.js';

let h: Harness;
beforeAll(async () => {
  h = await start();
});
afterAll(async () => {
  await h.close();
});

describe('lessl route', () => {
  test('run takes ports; route add prints a URL that reaches the daemon without a token; ls lists it by handle; rm revokes it', async () => {
    const ran = await h.run(['run', '--detach-after', '1', '-'], {
      input: JSON.stringify({ image: 'busybox', daemon: true, ports: [8080], cmd: ['httpd -f -p 8080'] }),
    });
    expect(ran.code).toBe(0);
    const id = /daemon task (t_[a-z0-9]+) is running/.exec(ran.stderr)?.[1] ?? '';
    expect(id).not.toBe('');
    const added = await h.run(['route', 'add', id, '8080']);
    expect(added.code).toBe(0);
    const url = added.stdout.trim();
    expect(url).toMatch(new RegExp(`^${h.url}/r/[A-Za-z0-9_-]{43}/$`));
    const r = await fetch(`${url}hello?x=1`);
    expect([r.status, await r.text()]).toEqual([200, 'GET /hello?x=1\n']);

    const ls = await h.run(['route', 'ls', id, '--json']);
    const items = JSON.parse(ls.stdout) as { handle: string; port: number; task: string }[];
    expect(items).toMatchObject([{ port: 8080, task: id }]);
    expect(ls.stdout).not.toContain(url.split('/r/')[1]?.slice(0, 43) ?? 'none');
    const table = await h.run(['route', 'ls', id]);
    expect(table.stdout).toMatch(/^HANDLE +PORT +CREATED\n/);
    expect(table.stdout).toContain(items[0]?.handle ?? 'none');

    expect((await h.run(['route', 'rm', id, items[0]?.handle ?? ''])).code).toBe(0);
    expect((await fetch(url)).status).toBe(404);
    expect((await h.run(['route', 'ls', id])).stdout).toMatch(/^HANDLE +PORT +CREATED\n$/);
    await h.run(['rm', id]);
  });

  test('refusals: an undeclared port is InvalidEntry, another user’s task and an unknown handle NotFound, a bad port a usage error', async () => {
    const ran = await h.run(['run', '--detach-after', '1', '-'], {
      input: JSON.stringify({ image: 'busybox', daemon: true, ports: [8080], cmd: ['httpd -f -p 8080'] }),
    });
    const id = /daemon task (t_[a-z0-9]+) is running/.exec(ran.stderr)?.[1] ?? '';
    const undeclared = await h.run(['route', 'add', id, '9090']);
    expect([undeclared.code, undeclared.stderr]).toEqual([1, expect.stringContaining('InvalidEntry')]);
    const bob = await h.run(['route', 'add', id, '8080'], { user: 'bob' });
    expect([bob.code, bob.stderr]).toEqual([1, expect.stringContaining('NotFound')]);
    const gone = await h.run(['route', 'rm', id, 'h_nosuchhandle']);
    expect([gone.code, gone.stderr]).toEqual([1, expect.stringContaining('NotFound')]);
    expect((await h.run(['route', 'add', id, 'eighty'])).code).not.toBe(0);
    await h.run(['rm', id]);
  });
});
