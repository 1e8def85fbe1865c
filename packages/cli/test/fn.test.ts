/**
 * `lessl fn deploy|invoke|ls|rm|logs`: the real binary against a real service on loopback
 * (memory backend; its tiny shell's lone `cat` copies stdin to stdout). Exit codes are the
 * function's; input comes from --data, --file or a pipe and the output is written byte for byte;
 * failures are a message and a non-zero exit, and a refused deploy sends nothing.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { start, type Harness } from './harness.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let h: Harness;
let dir = '';
beforeAll(async () => {
  h = await start();
  dir = mkdtempSync(join(tmpdir(), 'lessl-fn-'));
});
afterAll(async () => {
  await h.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The caller's functions as the service lists them (JSON). */
const listed = async (user = 'ann'): Promise<Json[]> => {
  const r = await h.run(['--json', 'fn', 'ls'], { user });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Json[];
};

describe('lessl fn deploy', () => {
  test('creates with --cmd or an argv after --; prints the name and version; a change is a new version', async () => {
    expect(await h.run(['fn', 'deploy', 'hello', '--image', 'busybox', '--cmd', 'echo hello'])).toMatchObject({
      code: 0,
      stdout: 'hello version 1 (created)\n',
    });
    expect(await h.run(['fn', 'deploy', 'copy', '--image', 'busybox', '--', 'cat'])).toMatchObject({ code: 0 });
    const again = await h.run(['fn', 'deploy', 'hello', '--image', 'busybox', '--cmd', 'echo hello']);
    expect(again).toMatchObject({ code: 0, stdout: 'hello version 1\n' });
    const changed = await h.run([
      '--json',
      'fn',
      'deploy',
      'hello',
      '--image',
      'busybox',
      '--cmd',
      'echo hello',
      '--env',
      'A=1',
      '--env',
      'B=x=y',
      '--reuse',
      'per-function',
      '--concurrency',
      '2',
      '--min',
      '0',
      '--max',
      '3',
      '--idle',
      '60',
      '--timeout',
      '5',
      '--memory',
      '64m',
      '--description',
      'says hello',
    ]);
    expect(changed.code, changed.stderr).toBe(0);
    expect(JSON.parse(changed.stdout)).toMatchObject({
      name: 'hello',
      owner: 'ann',
      version: 2,
      cmd: 'echo hello',
      env: { A: '1', B: 'x=y' },
      reuse: 'per-function',
      concurrency: 2,
      max_containers: 3,
      idle_seconds: 60,
      limits: { timeout: 5, memory: 64 << 20 },
      description: 'says hello',
    });
  });

  test('neither or both of --cmd and an argv, a bad --env or --memory: refused before anything is sent', async () => {
    for (const args of [
      ['fn', 'deploy', 'nope', '--image', 'busybox'],
      ['fn', 'deploy', 'nope', '--image', 'busybox', '--cmd', 'echo', '--', 'echo'],
      ['fn', 'deploy', 'nope', '--image', 'busybox', '--cmd', 'echo', '--env', 'NOEQUALS'],
      ['fn', 'deploy', 'nope', '--image', 'busybox', '--cmd', 'echo', '--memory', 'lots'],
    ]) {
      const r = await h.run(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toMatch(/^lessl: InvalidEntry: /);
      expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    }
    expect((await listed()).map((f) => f.name)).not.toContain('nope');
  });

  test('a name another user owns is refused (NameCollision); a bad name is refused before anything is sent', async () => {
    const taken = await h.run(['fn', 'deploy', 'hello', '--image', 'busybox', '--cmd', 'echo bob'], { user: 'bob' });
    expect(taken.code).toBe(1);
    expect(taken.stderr).toMatch(/^lessl: NameCollision: /);
    const bad = await h.run(['fn', 'deploy', 'Bad_Name', '--image', 'busybox', '--cmd', 'echo']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^lessl: InvalidEntry: not a function name: Bad_Name/);
  });
});

describe('lessl fn invoke', () => {
  test("writes the function's stdout byte for byte: --data, --file, and stdin when piped", async () => {
    expect(await h.run(['fn', 'invoke', 'copy', '--data', 'from data'])).toMatchObject({ code: 0, stdout: 'from data' });
    const bin = Buffer.from([0, 1, 2, 250, 255, 10, 13, 0x80]);
    const file = join(dir, 'input.bin');
    writeFileSync(file, bin);
    expect((await h.run(['fn', 'invoke', 'copy', '--file', file])).bytes).toEqual(bin);
    const piped = await h.run(['fn', 'invoke', 'copy'], { input: bin });
    expect(piped.code).toBe(0);
    expect(piped.bytes).toEqual(bin);
    expect(await h.run(['fn', 'invoke', 'hello'])).toMatchObject({ code: 0, stdout: 'hello\n', stderr: '' });
  });

  test("exits with the function's exit code; --verbose tells exit code, duration and start on stderr", async () => {
    expect(await h.run(['fn', 'deploy', 'three', '--image', 'busybox', '--cmd', 'echo out; exit 3'])).toMatchObject({ code: 0 });
    const r = await h.run(['fn', 'invoke', 'three', '--verbose']);
    expect(r).toMatchObject({ code: 3, stdout: 'out\n' });
    expect(r.stderr).toMatch(
      /^lessl: invocation \S+ of three version 1: exited 3 in \d+ ms, (cold|warm), \d+ bytes of stderr\n$/,
    );
  });

  test('an invocation stopped at its deadline exits 1 and says why', async () => {
    await h.run(['fn', 'deploy', 'slow', '--image', 'busybox', '--cmd', 'sleep 30', '--timeout', '1']);
    const r = await h.run(['fn', 'invoke', 'slow']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^lessl: invocation \S+ of slow version 1: deadline\n$/);
  });

  test('--async prints the job ID; the job holds the result', async () => {
    const r = await h.run(['fn', 'invoke', 'copy', '--async', '--data', 'later']);
    expect(r.code, r.stderr).toBe(0);
    const id = r.stdout.trim();
    expect(id).toMatch(/^\S+$/);
    let job: Json = {};
    for (let i = 0; i < 200 && !['done', 'failed', 'cancelled'].includes(String(job.state)); i++) {
      const res = await fetch(`${h.url}/v1/jobs/${id}`, { headers: { authorization: `Bearer ${h.tokens.ann ?? ''}` } });
      job = (await res.json()) as Json;
      if (job.state !== 'done') await new Promise((res2) => setTimeout(res2, 50));
    }
    expect(job.state).toBe('done');
    expect(JSON.stringify(job)).toContain('later');
  });

  test("another user's private function is not found; a missing one too", async () => {
    const r = await h.run(['fn', 'invoke', 'copy', '--data', 'x'], { user: 'bob' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^lessl: NotFound: /);
    expect(r.stdout).toBe('');
    expect((await h.run(['fn', 'invoke', 'nosuch'])).stderr).toMatch(/^lessl: NotFound: /);
  });

  test('--data and --file together, or a file that is missing: refused', async () => {
    expect((await h.run(['fn', 'invoke', 'copy', '--data', 'a', '--file', 'b'])).stderr).toMatch(/^lessl: InvalidEntry: /);
    const missing = await h.run(['fn', 'invoke', 'copy', '--file', join(dir, 'missing')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^lessl: NotFound: cannot read /);
  });
});

describe('lessl fn ls, logs, rm', () => {
  test("ls: a table of the caller's functions (name, owner, image, reuse, version, public); --json the views", async () => {
    const r = await h.run(['fn', 'ls']);
    expect(r.code).toBe(0);
    const [header, ...rows] = r.stdout.trimEnd().split('\n');
    expect(header).toMatch(/^NAME\s+OWNER\s+IMAGE\s+REUSE\s+VERSION\s+PUBLIC$/);
    expect(rows.find((l) => l.startsWith('hello '))).toMatch(/^hello\s+ann\s+busybox\s+per-function\s+2\s+false$/);
    expect((await listed('bob')).map((f) => f.name)).toEqual([]);
  });

  test('logs: the newest invocations first, with exit codes and reasons; --json as the service answers', async () => {
    const r = await h.run(['--json', 'fn', 'logs', 'three']);
    expect(r.code, r.stderr).toBe(0);
    const inv = (JSON.parse(r.stdout) as Json).invocations as Json[];
    expect(inv[0]).toMatchObject({ version: 1, exit_code: 3, reason: 'exited' });
    const table = await h.run(['fn', 'logs', 'slow']);
    expect(table.stdout).toMatch(
      /^ID\s+VERSION\s+STARTED\s+MS\s+EXIT\s+REASON\s+START\s+STDERR\n\S+\s+1\s+\d+s ago\s+\d+\s+-\s+deadline\s+(cold|warm)/,
    );
  });

  test('rm removes; invoking it then is NotFound; removing what is not there fails', async () => {
    expect(await h.run(['fn', 'rm', 'slow', 'three'])).toMatchObject({ code: 0, stdout: 'slow\nthree\n' });
    expect((await listed()).map((f) => f.name).sort()).toEqual(['copy', 'hello']);
    expect((await h.run(['fn', 'invoke', 'three'])).stderr).toMatch(/^lessl: NotFound: /);
    expect((await h.run(['fn', 'rm', 'hello'], { user: 'bob' })).code).toBe(1);
    expect((await listed()).map((f) => f.name).sort()).toEqual(['copy', 'hello']);
  });
});

describe('lessl events', () => {
  test("a function's events: deployed, invoked (how it ended, cold or warm, no bytes of input or output), removed", async () => {
    expect((await h.run(['fn', 'deploy', 'bobs', '--image', 'busybox', '--', 'cat'], { user: 'bob' })).code).toBe(0);
    expect((await h.run(['fn', 'invoke', 'bobs', '--data', 'secret input'], { user: 'bob' })).stdout).toBe('secret input');
    expect((await h.run(['fn', 'rm', 'bobs'], { user: 'bob' })).code).toBe(0);
    const r = await h.run(['events', '--since', '0', '--count', '3'], { user: 'bob' });
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout
      .trimEnd()
      .split('\n')
      .map((l) => l.split('\t').slice(1));
    expect(lines[0]).toEqual(['function://bobs', 'v1', 'deployed']);
    expect(lines[1]?.slice(0, 2)).toEqual(['function://bobs', 'v1']);
    expect(lines[1]?.[2]).toMatch(/^invoked exited 0 \((cold|warm), \d+ ms\)$/);
    expect(lines[2]).toEqual(['function://bobs', 'v1', 'removed']);
    expect(r.stdout).not.toContain('secret');
  });
});
