/**
 * The `lessl` binary as a child process against a real service on loopback (memory backend):
 * every command, its --json output, and failures (bad token, unknown ID, bad spec, missing
 * routes) answered with a non-zero exit and the problem's lessl tag on stderr.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { SEED_SPEC as seed } from '../../service/test/helpers.js';
import { ADMIN_TOKEN, BIN, lessl, start, type Harness } from './harness.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let h: Harness;
let dir = '';
beforeAll(async () => {
  h = await start();
  dir = mkdtempSync(join(tmpdir(), 'lessl-cli-'));
});
afterAll(async () => {
  await h.close();
  rmSync(dir, { recursive: true, force: true });
});

const specFile = (name: string, spec: unknown): string => {
  const f = join(dir, name);
  writeFileSync(f, typeof spec === 'string' ? spec : JSON.stringify(spec));
  return f;
};
const lines = (s: string): Json[] =>
  s
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Json);

describe('lessl --version', () => {
  test('prints the version of @lessl/cli', async () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(await lessl(['--version'])).toMatchObject({ code: 0, stdout: `${pkg.version}\n` });
  });
});

describe('lessl run', () => {
  test('runs the seed-001 example from a file: the output on stdout, exit status 0', async () => {
    const r = await h.run(['run', specFile('seed.json', seed)]);
    expect(r).toMatchObject({ code: 0, stdout: 'hello value\nsecond\n' });
  });

  test("the exit status is the task's: the first failing command's code; the rest are skipped", async () => {
    const r = await h.run(['run', '-'], { input: JSON.stringify({ image: 'busybox', cmd: ['echo a', 'exit 3', 'echo never'] }) });
    expect(r).toMatchObject({ code: 3, stdout: 'a\n' });
  });

  test('--json prints the finished task view (per-command exit codes and output)', async () => {
    const r = await h.run(['--json', 'run', '-'], { input: JSON.stringify(seed) });
    expect(r.code).toBe(0);
    const t = JSON.parse(r.stdout) as Json;
    expect(t).toMatchObject({ name: 'hello_world', state: 'exited', exitCode: 0, image: 'image://local/busybox' });
    expect(t.commands.map((c: Json) => [c.exitCode, c.output])).toEqual([
      [0, 'hello value\n'],
      [0, 'second\n'],
    ]);
  });

  test('a batch streams each task in order; --json prints its page of tasks; the exit status is the first failure', async () => {
    const batch = [
      { image: 'busybox', cmd: ['echo one'], task_name: 'b1' },
      { image: 'busybox', cmd: ['echo two', 'exit 5'], task_name: 'b2' },
    ];
    expect(await h.run(['run', specFile('batch.json', batch)])).toMatchObject({ code: 5, stdout: 'one\ntwo\n' });
    const j = await h.run(['run', specFile('batch.json', batch), '--json']);
    expect(j.code).toBe(5);
    expect((JSON.parse(j.stdout) as Json).items.map((t: Json) => [t.name, t.exitCode])).toEqual([
      ['b1', 0],
      ['b2', 5],
    ]);
  });

  test('a daemon: prints the output of all its initial commands, then its ID, and returns with the task running', async () => {
    const r = await h.run(['run', '-'], {
      input: JSON.stringify({ image: 'busybox', daemon: true, cmd: ['echo first', 'sleep 1', 'echo after the first poll'] }),
    });
    expect(r).toMatchObject({ code: 0, stdout: 'first\nafter the first poll\n' });
    const id = /daemon task (t_[a-z0-9]+) is running/.exec(r.stderr)?.[1] ?? '';
    expect(JSON.parse((await h.run(['--json', 'ps', '--state', 'running'])).stdout).map((t: Json) => t.id)).toContain(id);
    expect((await h.run(['rm', id])).code).toBe(0);
  });

  test('a daemon whose initial command does not end: returns after --detach-after with what it wrote and its ID', async () => {
    const r = await h.run(['run', '--detach-after', '1', '-'], {
      input: JSON.stringify({ image: 'busybox', daemon: true, cmd: ['echo serving', 'sleep 100000'] }),
    });
    expect(r).toMatchObject({ code: 0, stdout: 'serving\n' });
    const id = /daemon task (t_[a-z0-9]+) is running/.exec(r.stderr)?.[1] ?? '';
    expect(id).not.toBe('');
    expect((await h.run(['rm', id])).code).toBe(0);
  });

  test('a bad spec (unknown field) is refused: exit 1, InvalidEntry on stderr; with --json the problem document', async () => {
    const f = specFile('bad.json', { ...seed, bogus: 1 });
    const r = await h.run(['run', f]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^lessl: InvalidEntry: .*bogus/);
    const j = await h.run(['--json', 'run', f]);
    expect(j.code).toBe(1);
    expect(JSON.parse(j.stderr)).toMatchObject({ tag: 'InvalidEntry', status: 400, keys: ['bogus'] });
    expect(j.stdout).toBe('');
  });

  test('an unknown image, a file that is not JSON, a missing file: exit 1 with the tag', async () => {
    const img = await h.run(['run', '-'], { input: JSON.stringify({ image: 'nope', cmd: ['echo'] }) });
    expect(img).toMatchObject({ code: 1 });
    expect(img.stderr).toContain('InvalidEntry: unknown image nope');
    const notJson = await h.run(['run', specFile('not.json', '{ "image": ')]);
    expect(notJson.code).toBe(1);
    expect(notJson.stderr).toMatch(/InvalidEntry: .*not JSON/);
    const missing = await h.run(['run', join(dir, 'missing.json')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('NotFound: cannot read');
  });

  test('a bad token: exit 1, PermissionDenied (the 401 problem) on stderr', async () => {
    const r = await h.run(['run', specFile('seed.json', seed)], { token: 'lsl_not-a-token' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^lessl: PermissionDenied: the token is invalid/);
    expect(r.stderr).not.toContain('anonymous');
    const j = await h.run(['--json', 'ps'], { token: 'lsl_not-a-token' });
    expect(JSON.parse(j.stderr)).toMatchObject({ tag: 'PermissionDenied', status: 401 });
    const none = await lessl(['ps'], { url: h.url, token: '' });
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/^lessl: PermissionDenied: no token: set LESSL_TOKEN or pass --token/);
  });

  test('a service that does not answer: exit 1, Unavailable naming the URL', async () => {
    const s = createNetServer();
    const port = await new Promise<number>((resolve) =>
      s.listen(0, '127.0.0.1', () => resolve((s.address() as AddressInfo).port)),
    );
    await new Promise((resolve) => s.close(resolve));
    const r = await lessl(['ps'], { url: `http://127.0.0.1:${port}`, token: 'x' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(
        `^lessl: Unavailable: cannot reach the service at http://127.0.0.1:${port} \\(ECONNREFUSED\\): .*\`lessl serve\``,
      ),
    );
  });
});

describe('ps, logs, rm', () => {
  test('ps fits 80 columns: long names and images cut, creation times relative; image sizes read as bytes', async () => {
    await h.run(['run', '-'], {
      input: JSON.stringify({ image: 'busybox', task_name: 'a-task-name-much-longer-than-any-column', cmd: ['echo x'] }),
    });
    const r = await h.run(['ps']);
    const rows = r.stdout.trimEnd().split('\n');
    for (const row of rows) expect(row.length).toBeLessThanOrEqual(80);
    expect(rows[1]).toMatch(/^t_[a-z0-9]+ +a-task-name-m… +exited +0 +busybox +\d+s ago$/);
    const images = await h.run(['images', 'ls']);
    expect(images.stdout).toMatch(/\nbusybox +ready +\(public\) +3 B +/);
  });

  test('ps lists only the caller’s tasks; --json is the list of task views; --state filters', async () => {
    const mine = JSON.parse(
      (await h.run(['--json', 'run', '-'], { input: JSON.stringify({ ...seed, task_name: 'listed' }) })).stdout,
    ) as Json;
    const r = await h.run(['ps']);
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')[0]).toMatch(/^ID\s+NAME\s+STATE\s+EXIT\s+IMAGE\s+CREATED$/);
    expect(r.stdout).toContain(mine.id);
    const j = JSON.parse((await h.run(['ps', '--json', '--state', 'exited'])).stdout) as Json[];
    expect(j.map((t) => t.id)).toContain(mine.id);
    expect(j.every((t) => t.state === 'exited')).toBe(true);
    const bob = JSON.parse((await h.run(['ps', '--json'], { user: 'bob' })).stdout) as Json[];
    expect(bob.map((t) => t.id)).not.toContain(mine.id);
  });

  test('logs prints the output; -f follows a running task until it ends; --json prints JSON lines', async () => {
    const t = JSON.parse((await h.run(['--json', 'run', '-'], { input: JSON.stringify(seed) })).stdout) as Json;
    expect(await h.run(['logs', t.id])).toMatchObject({ code: 0, stdout: 'hello value\nsecond\n' });
    expect(
      lines((await h.run(['--json', 'logs', t.id])).stdout)
        .map((l) => l.data)
        .join(''),
    ).toBe('hello value\nsecond\n');
    // submitted without waiting: -f streams until the task ends
    const job = (await (
      await fetch(`${h.url}/v1/tasks`, {
        method: 'POST',
        headers: { authorization: `Bearer ${h.tokens.ann}`, 'content-type': 'application/json' },
        body: JSON.stringify({ image: 'busybox', cmd: ['echo one; sleep 1; echo two', 'echo three'] }),
      })
    ).json()) as Json;
    expect(await h.run(['logs', '-f', job.tasks[0]])).toMatchObject({ code: 0, stdout: 'one\ntwo\nthree\n' });
  });

  test('an unknown ID, or another user’s: exit 1, NotFound', async () => {
    const t = JSON.parse((await h.run(['--json', 'run', '-'], { input: JSON.stringify(seed) })).stdout) as Json;
    for (const r of [
      await h.run(['logs', 't_00000000']),
      await h.run(['logs', t.id], { user: 'bob' }),
      await h.run(['rm', t.id], { user: 'bob' }),
    ]) {
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^lessl: NotFound: /);
    }
  });

  test('rm removes (idempotently): the task is gone from ps and its logs are NotFound', async () => {
    const t = JSON.parse((await h.run(['--json', 'run', '-'], { input: JSON.stringify(seed) })).stdout) as Json;
    expect(await h.run(['rm', t.id])).toMatchObject({ code: 0, stdout: `${t.id}\n` });
    expect(JSON.parse((await h.run(['--json', 'rm', t.id])).stdout)).toEqual({ removed: [t.id] });
    expect((await h.run(['ps'])).stdout).not.toContain(t.id);
    expect((await h.run(['logs', t.id])).stderr).toContain('NotFound');
  });
});

describe('exec', () => {
  test('runs a command in a running daemon: its output, its exit code; --json shows the new commands only', async () => {
    const d = await h.run(['--json', 'run', '-'], {
      input: JSON.stringify({ image: 'busybox', daemon: true, cmd: ['echo up'] }),
    });
    expect(d.code).toBe(0);
    const t = JSON.parse(d.stdout) as Json;
    expect(t).toMatchObject({ daemon: true, state: 'running' });
    expect(await h.run(['exec', t.id, '--', 'echo', 'more'])).toMatchObject({ code: 0, stdout: 'more\n' });
    expect(await h.run(['exec', t.id, '--', 'exit 4'])).toMatchObject({ code: 4, stdout: '' });
    const j = await h.run(['--json', 'exec', t.id, '--', 'echo', 'j']);
    expect(JSON.parse(j.stdout)).toMatchObject({ id: t.id, commands: [{ cmd: 'echo j', exitCode: 0, output: 'j\n' }] });
    expect((await h.run(['logs', t.id])).stdout).toBe('up\nmore\nj\n');
    expect((await h.run(['rm', t.id])).code).toBe(0);
  });

  test('a task that is not a running daemon: exit 1, Conflict; an unknown one: NotFound', async () => {
    const t = JSON.parse((await h.run(['--json', 'run', '-'], { input: JSON.stringify(seed) })).stdout) as Json;
    const r = await h.run(['exec', t.id, '--', 'echo', 'x']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^lessl: Conflict: task t_[a-z0-9]+ is not a daemon task/);
    expect((await h.run(['exec', 't_00000000', '--', 'echo'])).stderr).toMatch(/^lessl: NotFound/);
  });
});

describe('events', () => {
  test('--since replays the caller’s events: one line each (event id, type, element id); --json lines carry the lessl event', async () => {
    const t = JSON.parse((await h.run(['--json', 'run', '-'], { input: JSON.stringify(seed) })).stdout) as Json;
    const r = await h.run(['events', '--all', '--since', '0', '--count', '3']);
    expect(r.code).toBe(0);
    const rows = r.stdout.trim().split('\n');
    expect(rows).toHaveLength(3);
    for (const row of rows) expect(row).toMatch(/^[A-Za-z0-9_-]{22}\t[a-z-]+\t\S*$/);
    // bob replays from 0 too: the first event he sees is of his own task, never ann's earlier ones
    const b = JSON.parse((await h.run(['--json', 'run', '-'], { user: 'bob', input: JSON.stringify(seed) })).stdout) as Json;
    const [first] = lines((await h.run(['--json', 'events', '--since', '0', '--count', '1'], { user: 'bob' })).stdout);
    expect(String(first?.data.id)).toContain(b.id);
    expect(String(first?.data.id)).not.toContain(t.id);
    const ann = lines((await h.run(['--json', 'events', '--since', '0', '--count', '2'])).stdout);
    expect(ann).toHaveLength(2);
    expect(ann[0]?.data).toMatchObject({ type: ann[0]?.type });
    // --since an event id resumes after it
    const [next] = lines((await h.run(['--json', 'events', '--since', String(ann[0]?.id), '--count', '1'])).stdout);
    expect(next).toEqual(ann[1]);
  });

  test('by default, task-level events: each command started and ended (with its exit code), the task removed', async () => {
    const cat = (await h.run(['users', 'add', 'cat'], { user: 'admin' })).stdout.trim(); // a user with no events yet
    const r = await h.run(['run', '-'], { token: cat, input: JSON.stringify({ image: 'busybox', cmd: ['echo a', 'exit 3'] }) });
    const id = (JSON.parse((await h.run(['--json', 'ps'], { token: cat })).stdout) as Json[])[0]?.id as string;
    expect(r.code).toBe(3);
    await h.run(['rm', id], { token: cat });
    const ev = await h.run(['events', '--since', '0', '--count', '5'], { token: cat });
    const mine = ev.stdout
      .trim()
      .split('\n')
      .map((l) => l.split('\t').slice(1))
      .filter(([t]) => t === id);
    expect(mine).toEqual([
      [id, 'c0', 'started'],
      [id, 'c0', 'exited 0'],
      [id, 'c1', 'started'],
      [id, 'c1', 'exited 3'],
      [id, '-', 'removed'],
    ]);
  });

  test('follows live events: a task run after it starts shows up', async () => {
    const child = spawn(process.execPath, [BIN, '--json', 'events', '--count', '1'], {
      env: { ...process.env, LESSL_URL: h.url, LESSL_TOKEN: h.tokens.ann },
    });
    const first = new Promise<Json>((resolve) =>
      createInterface({ input: child.stdout }).once('line', (l) => resolve(JSON.parse(l) as Json)),
    );
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    // the stream may attach after a first run: run until an event arrives (bounded)
    let got: Json | undefined;
    for (let i = 0; i < 50 && got === undefined; i++) {
      await h.run(['run', '-'], { input: JSON.stringify(seed) });
      got = await Promise.race([first, new Promise<undefined>((r) => setTimeout(r, 200))]);
    }
    expect(got?.data.id).toMatch(/t_/);
    expect(await exited).toBe(0);
  });
});

describe('users', () => {
  test('users add prints a working token; --admin makes an admin; --json prints the user', async () => {
    const r = await h.run(['users', 'add', 'carol'], { user: 'admin' });
    expect(r.code).toBe(0);
    const token = r.stdout.trim();
    expect(token).toMatch(/^lsl_/);
    expect(await h.run(['--json', 'ps'], { token })).toMatchObject({ code: 0, stdout: '[]\n' });
    const a = JSON.parse((await h.run(['--json', 'users', 'add', 'dave', '--admin'], { user: 'admin' })).stdout) as Json;
    expect(a).toMatchObject({ name: 'dave', admin: true });
    const ls = JSON.parse((await h.run(['--json', 'users', 'ls'], { token: a.token })).stdout) as Json[];
    expect(ls.map((u) => u.name)).toEqual(expect.arrayContaining(['admin', 'ann', 'carol', 'dave']));
  });

  test('a duplicate is NameCollision; a non-admin is PermissionDenied; a bad name is InvalidEntry', async () => {
    const dup = await h.run(['users', 'add', 'ann'], { user: 'admin' });
    expect(dup.code).toBe(1);
    expect(dup.stderr).toMatch(/^lessl: NameCollision: /);
    const notAdmin = await h.run(['users', 'add', 'eve'], { user: 'ann' });
    expect(notAdmin.code).toBe(1);
    expect(notAdmin.stderr).toMatch(/^lessl: PermissionDenied: /);
    expect((await h.run(['users', 'add', 'Bad Name'], { user: 'admin' })).stderr).toMatch(/^lessl: InvalidEntry: /);
  });

  test('users rm removes a user and what it owns: --wait prints what was removed per kind; an unknown user is NotFound', async () => {
    const token = (await h.run(['users', 'add', 'gil'], { user: 'admin' })).stdout.trim();
    const spec = specFile('gil.json', { image: 'busybox', cmd: ['echo gil'] });
    expect((await h.run(['run', spec], { token })).code).toBe(0);
    const r = await h.run(['users', 'rm', 'gil', '--wait'], { user: 'admin' });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^removed\ttokens\t1\t/m);
    expect(r.stdout).toMatch(/^removed\ttasks\t1\tt_[0-9a-f]+$/m);
    expect(r.stdout).toMatch(/^removed\thosts\t0$/m);
    expect((await h.run(['ps'], { token })).stderr).toMatch(/^lessl: PermissionDenied: /);
    const again = await h.run(['users', 'rm', 'gil'], { user: 'admin' });
    expect([again.code, again.stderr]).toEqual([1, expect.stringMatching(/^lessl: NotFound: /)]);
    const hal = (await h.run(['users', 'add', 'hal'], { user: 'admin' })).stdout.trim();
    expect((await h.run(['users', 'rm', 'hal'], { token: hal })).stdout).toMatch(/^j_[0-9a-f]+\n$/);
  });
});

describe('images', () => {
  test('load, ls, rm; a name taken is NameCollision; another user does not see your image', async () => {
    const tar = specFile('image.tar', 'an archive (any bytes on the memory backend)');
    const loaded = await h.run(['images', 'load', 'mine', tar]);
    expect([loaded.code, loaded.stdout]).toEqual([0, 'mine\n']);
    const ls = await h.run(['--json', 'images', 'ls']);
    expect((JSON.parse(ls.stdout) as { name: string; state: string }[]).map((i) => [i.name, i.state])).toEqual(
      expect.arrayContaining([['mine', 'ready']]),
    );
    expect((await h.run(['images', 'ls'])).stdout).toMatch(/^NAME +STATE +OWNER/);
    const again = await h.run(['images', 'load', 'mine', tar]);
    expect([again.code, again.stderr]).toEqual([1, expect.stringMatching(/^lessl: NameCollision: /)]);
    const rm = await h.run(['images', 'rm', 'mine']);
    expect([rm.code, rm.stdout]).toEqual([0, 'mine\n']);
    expect((JSON.parse((await h.run(['--json', 'images', 'ls'])).stdout) as { name: string }[]).map((i) => i.name)).not.toContain(
      'mine',
    );
  });
});

describe('images refresh, images purge, pool', () => {
  test('each reaches its route and reports the typed answer (the memory backend has no pool or purge: Unsupported)', async () => {
    const refresh = await h.run(['images', 'refresh', 'busybox']);
    expect([refresh.code, refresh.stderr]).toEqual([1, expect.stringMatching(/^lessl: PermissionDenied: /)]);
    const upload = await h.run(['images', 'refresh', 'busybox'], { user: 'admin' });
    expect(upload.stderr).toMatch(/^lessl: Unsupported: .*without a source/);
    const badDuration = await h.run(['images', 'purge', '--unused-for', 'a week'], { user: 'admin' });
    expect([badDuration.code, badDuration.stderr]).toEqual([1, expect.stringMatching(/^lessl: InvalidEntry: not a duration/)]);
    expect((await h.run(['images', 'purge', '--unused-for', '7d'])).stderr).toMatch(/^lessl: PermissionDenied: /);
    expect((await h.run(['images', 'purge', '--unused-for', '7d', '--dry-run'], { user: 'admin' })).stderr).toMatch(
      /^lessl: Unsupported: /,
    );
    expect((await h.run(['pool'], { user: 'admin' })).stderr).toMatch(/^lessl: Unsupported: /);
    const bad = specFile('pool.json', JSON.stringify({ profiles: [{ image: 'busybox', min: 100 }] }));
    expect((await h.run(['pool', 'set', bad], { user: 'admin' })).stderr).toMatch(/^lessl: InvalidEntry: .*profiles\.0\.min/);
  });
});

describe('lessl serve', () => {
  test('--memory --port 0 serves the API (the admin token from LESSL_ADMIN_TOKEN); SIGTERM stops it with exit 0', async () => {
    const child = spawn(process.execPath, [BIN, '--json', 'serve', '--memory', '--port', '0', '--concurrency', '2'], {
      env: { ...process.env, LESSL_ADMIN_TOKEN: ADMIN_TOKEN },
    });
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    const ready = await new Promise<Json>((resolve) =>
      createInterface({ input: child.stdout }).once('line', (l) => resolve(JSON.parse(l) as Json)),
    );
    expect(ready).toEqual({
      url: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/),
      adminToken: null,
      registry: expect.any(String),
    });
    const tok = (await lessl(['users', 'add', 'zed'], { url: ready.url, token: ADMIN_TOKEN })).stdout.trim();
    expect(await lessl(['run', '-'], { url: ready.url, token: tok, input: JSON.stringify(seed) })).toMatchObject({
      code: 0,
      stdout: 'hello value\nsecond\n',
    });
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  test('a first start without LESSL_ADMIN_TOKEN prints an admin token once, which works', async () => {
    const env = { ...process.env };
    delete env.LESSL_ADMIN_TOKEN;
    const child = spawn(process.execPath, [BIN, '--json', 'serve', '--memory', '--port', '0'], { env });
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    const ready = await new Promise<Json>((resolve) =>
      createInterface({ input: child.stdout }).once('line', (l) => resolve(JSON.parse(l) as Json)),
    );
    expect(ready.adminToken).toMatch(/^lsl_/);
    expect(await lessl(['--json', 'users', 'ls'], { url: ready.url, token: ready.adminToken })).toMatchObject({ code: 0 });
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});
