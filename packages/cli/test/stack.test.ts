/**
 * The stack file and `lessl up`: a malformed file is refused naming its line, column and field
 * (bad YAML, a wrong type at a nested field, an unknown key...) and the service sees nothing; the
 * schema the CLI validates with is the one the service publishes; against a real service on
 * loopback (memory backend), `up --dry-run` prints the plan and changes nothing, `up` applies it,
 * a second `up` finds everything unchanged, a changed field is an update with a new version,
 * `--prune` removes what the file dropped, and a failure part-way says what was applied.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { STACK_SCHEMA } from '@lessl/service/stack';
import { formatProblem, loadStack, parseStack } from '../src/stack-file.js';
import { changedFields } from '../src/up.js';
import { BIN, lessl, start, type Harness } from './harness.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** The problems of a stack file's text, as `up` prints them. */
const problems = (text: string): string[] => {
  const r = parseStack(text);
  return r.ok ? [] : r.problems.map((p) => formatProblem('lessl.yml', p));
};

describe('the stack file: problems name the line, the column and the field', () => {
  test('a valid file reads as its stack', () => {
    const r = parseStack('version: 1\nfunctions:\n  hi:\n    image: busybox\n    argv: [echo, hi]\n');
    expect(r).toEqual({ ok: true, stack: { version: 1, functions: { hi: { image: 'busybox', argv: ['echo', 'hi'] } } } });
  });

  test('YAML that does not parse: where the parser stopped', () => {
    expect(problems('version: 1\nfunctions:\n  hi: [unclosed\n')).toEqual([
      'lessl.yml:4:1: Flow sequence in block collection must be sufficiently indented and end with a ]',
    ]);
    expect(problems('version: 1\nfunctions: {}\nfunctions: {}\n')[0]).toMatch(/^lessl\.yml:3:1: Map keys must be unique/);
  });

  test('a wrong type at a nested field: the value’s position and the dotted field', () => {
    const text = [
      'version: 1',
      'functions:',
      '  hi:',
      '    image: busybox',
      '    cmd: echo hi',
      '    limits:',
      '      memory: lots',
      '',
    ];
    expect(problems(text.join('\n'))).toEqual(['lessl.yml:7:15: functions.hi.limits.memory: must be integer']);
  });

  test('an unknown key: the key’s position; a missing one: its map’s', () => {
    expect(problems('version: 1\nfunctions:\n  hi:\n    image: busybox\n    cmd: x\n    memroy: 5\n')).toEqual([
      'lessl.yml:6:5: functions.hi.memroy: unknown field memroy',
    ]);
    expect(problems('version: 1\nfunctions:\n  hi:\n    cmd: x\n')).toEqual([
      'lessl.yml:4:5: functions.hi.image: missing field image',
    ]);
    expect(problems('functions: {}\n')).toEqual(['lessl.yml:1:1: version: missing field version']);
  });

  test('rules of a function: exactly one of argv and cmd, values in their sets, names, min below max', () => {
    const text = [
      'version: 1',
      'functions:',
      '  both:',
      '    image: busybox',
      '    cmd: echo',
      '    argv: [echo]',
      '  none:',
      '    image: busybox',
      '    reuse: sometimes',
      '  Bad_Name:',
      '    image: busybox',
      '    cmd: echo',
      '',
    ];
    expect(problems(text.join('\n'))).toEqual([
      'lessl.yml:4:5: functions.both: give only one of argv, cmd',
      'lessl.yml:8:5: functions.none: needs argv or cmd',
      'lessl.yml:9:12: functions.none.reuse: must be one of per-invocation, per-function',
      'lessl.yml:10:3: functions.Bad_Name: is not a name: lower-case letters, digits, . _ - (at most 64)',
    ]);
    expect(
      problems('version: 1\nfunctions:\n  a:\n    image: busybox\n    cmd: x\n    min_containers: 5\n    max_containers: 2\n'),
    ).toEqual(['lessl.yml:4:5: functions.a: must satisfy: exactly one of argv or cmd, and min_containers <= max_containers']);
  });

  test("an image source is checked against its own type's fields only", () => {
    const text = ['version: 2', 'images:', '  py:', '    source:', '      type: path', '      ref: python:3', ''];
    expect(problems(text.join('\n'))).toEqual([
      'lessl.yml:1:10: version: must be 1',
      'lessl.yml:5:7: images.py.source.path: missing field path',
      'lessl.yml:6:7: images.py.source.ref: unknown field ref',
    ]);
    expect(problems('version: 1\nimages:\n  py:\n    source: { type: ftp }\n')).toEqual([
      'lessl.yml:4:15: images.py.source.type: must be one of registry, url, path, git',
    ]);
  });

  test("relative path sources are the file's directory's", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lessl-stack-'));
    try {
      const file = join(dir, 'lessl.yml');
      writeFileSync(
        file,
        'version: 1\nimages:\n  a:\n    source: { type: path, path: ./rootfs }\n  b:\n    source: { type: path, path: /abs }\n',
      );
      const { stack } = await loadStack(file);
      expect(stack.images).toEqual({
        a: { source: { type: 'path', path: join(dir, 'rootfs') } },
        b: { source: { type: 'path', path: '/abs' } },
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the plan: what differs between the file and the service', () => {
  const view = {
    name: 'f',
    owner: 'ann',
    version: 3,
    created_at: '2026-01-01T00:00:00Z',
    updated_at: '2026-01-01T00:00:00Z',
    image: 'image://local/busybox',
    cmd: 'echo',
    env: {},
    limits: { memory: 256 << 20, cpus: 1, pids: 256, timeout: 300, output: 1 << 20 },
    network: 'none',
    reuse: 'per-invocation' as const,
    concurrency: 1,
    min_containers: 0,
    max_containers: 4,
    idle_seconds: 300,
    public: false,
  };

  test('defaults, empty maps, image IDs and the limits the file leaves to the service are no change', () => {
    expect(changedFields({ image: 'busybox', cmd: 'echo' }, view)).toEqual([]);
    expect(
      changedFields({ image: 'busybox', cmd: 'echo', env: {}, reuse: 'per-invocation', limits: { timeout: 300 } }, view),
    ).toEqual([]);
  });

  test('each field that differs is named', () => {
    expect(
      changedFields(
        { image: 'other', argv: ['echo'], env: { A: '1' }, limits: { timeout: 5 }, max_containers: 2, description: 'x' },
        view,
      ),
    ).toEqual(['image', 'argv', 'cmd', 'env', 'limits', 'max_containers', 'description']);
  });
});

let h: Harness;
let dir = '';
beforeAll(async () => {
  h = await start();
  dir = mkdtempSync(join(tmpdir(), 'lessl-up-'));
});
afterAll(async () => {
  await h.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Writes a stack file; answers its path. */
const stackFile = (name: string, lines: readonly string[]): string => {
  const f = join(dir, name);
  writeFileSync(f, `${lines.join('\n')}\n`);
  return f;
};

/** The caller's functions, by name, with their versions. */
const versions = async (user = 'ann'): Promise<Record<string, number>> => {
  const r = await fetch(`${h.url}/v1/functions`, { headers: { authorization: `Bearer ${h.tokens[user] ?? ''}` } });
  const list = ((await r.json()) as Json).functions as Json[];
  return Object.fromEntries(list.filter((f) => f.owner === user).map((f) => [f.name, f.version]));
};

const BASE = [
  'version: 1',
  'functions:',
  '  greet:',
  '    image: busybox',
  '    cmd: echo hello',
  '  copy:',
  '    image: busybox',
  '    argv: [cat]',
];

describe('the published schema', () => {
  test('GET /v1/schemas/stack.json (no token) answers the object the CLI validates with', async () => {
    const r = await fetch(`${h.url}/v1/schemas/stack.json`);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^application\/schema\+json/);
    expect(await r.json()).toEqual(STACK_SCHEMA);
  });
});

describe('lessl up', () => {
  test('--dry-run prints the plan and changes nothing', async () => {
    const r = await h.run(['up', '-f', stackFile('lessl.yml', BASE), '--dry-run']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(
      /^plan for .*lessl\.yml:\n {2}\+ function greet\s+create\n {2}\+ function copy\s+create\n2 to create\n$/,
    );
    expect(r.stderr).toBe('lessl: dry run: nothing was applied\n');
    const j = await h.run(['--json', 'up', '-f', join(dir, 'lessl.yml'), '--dry-run']);
    expect(JSON.parse(j.stdout)).toEqual({
      plan: [
        { kind: 'function', name: 'greet', action: 'create' },
        { kind: 'function', name: 'copy', action: 'create' },
      ],
      applied: [],
    });
    expect(await versions()).toEqual({});
  });

  test('applies the plan; a second up finds everything unchanged', async () => {
    const file = stackFile('lessl.yml', BASE);
    const r = await h.run(['up', '-f', file]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('created function greet version 1\ncreated function copy version 1\ndone: 2 created\n');
    expect(await versions()).toEqual({ greet: 1, copy: 1 });
    expect(await h.run(['fn', 'invoke', 'copy', '--data', 'in'])).toMatchObject({ code: 0, stdout: 'in' });
    const again = await h.run(['up', '-f', file]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/= function greet\s+unchanged: version 1\n.*\n?everything is unchanged\n$/);
    expect(await versions()).toEqual({ greet: 1, copy: 1 });
  });

  test('a changed field is an update naming the field, with a new version', async () => {
    const file = stackFile('lessl.yml', [...BASE, '    env: { MODE: fast }', '    limits: { timeout: 5 }']);
    const r = await h.run(['up', '-f', file]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/~ function copy\s+update: env, limits \(version 1\)/);
    expect(r.stdout).toContain('updated function copy version 2\n');
    expect(await versions()).toEqual({ greet: 1, copy: 2 });
    expect((await h.run(['up', '-f', file])).stdout).toContain('everything is unchanged\n');
  });

  test('what the file dropped is kept without --prune, removed with it (--yes, or refused)', async () => {
    const file = stackFile('lessl.yml', BASE.slice(0, 5));
    const kept = await h.run(['up', '-f', file]);
    expect(kept.stdout).toMatch(/\? function copy\s+extra: not in the file: kept \(--prune removes it\)/);
    expect(await versions()).toEqual({ greet: 1, copy: 2 });
    const refused = await h.run(['up', '-f', file, '--prune']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^lessl: Aborted: the plan removes function copy: pass --yes/);
    expect(await versions()).toEqual({ greet: 1, copy: 2 });
    const pruned = await h.run(['up', '-f', file, '--prune', '--yes']);
    expect(pruned.code, pruned.stderr).toBe(0);
    expect(pruned.stdout).toMatch(/- function copy\s+remove\n/);
    expect(pruned.stdout).toContain('removed function copy\n');
    expect(await versions()).toEqual({ greet: 1 });
  });

  test('a malformed file is refused with its line and field; the service sees nothing', async () => {
    const bad = [
      [...BASE, '  new: [unclosed'],
      [...BASE, '    limits:', '      memory: lots'],
      [...BASE, '    memroy: 5'],
    ];
    for (const [i, lines] of bad.entries()) {
      const r = await h.run(['up', '-f', stackFile(`bad${i}.yml`, lines)]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(
        /^lessl: InvalidEntry: \S+bad\d\.yml is not a valid stack file; nothing was applied:\n {2}\S+bad\d\.yml:\d+:\d+: /,
      );
      expect(r.stdout).toBe('');
    }
    const r = await h.run(['up', '-f', join(dir, 'bad1.yml')]);
    expect(r.stderr).toContain('bad1.yml:10:15: functions.copy.limits.memory: must be integer');
    expect((await h.run(['up', '-f', join(dir, 'bad2.yml')])).stderr).toContain(
      'bad2.yml:9:5: functions.copy.memroy: unknown field memroy',
    );
    expect(await versions()).toEqual({ greet: 1 });
    expect((await h.run(['up', '-f', join(dir, 'missing.yml')])).stderr).toMatch(/^lessl: NotFound: cannot read /);
  });

  test('a function naming an image neither the file nor the service has: refused before anything is applied', async () => {
    const file = stackFile('bob.yml', [
      'version: 1',
      'functions:',
      '  mine:',
      '    image: busybox',
      '    cmd: echo',
      '  lost:',
      '    image: nosuchimage',
      '    cmd: echo',
    ]);
    const r = await h.run(['up', '-f', file], { user: 'bob' });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      'lessl: NameCollision: the stack cannot be applied; nothing was:\n  functions.lost.image: no image nosuchimage in the file or on the service\n',
    );
    expect(await versions('bob')).toEqual({});
  });

  test('a failure part-way says what was applied and what was not; running it again converges', async () => {
    // bob cannot see ann's private function greet: the service refuses it when it is applied
    const lines = [
      'version: 1',
      'functions:',
      '  one:',
      '    image: busybox',
      '    cmd: echo 1',
      '  two:',
      '    image: busybox',
      '    cmd: echo 2',
    ];
    const file = stackFile('partial.yml', [...lines, '  greet:', '    image: busybox', '    cmd: echo 3']);
    const r = await h.run(['up', '-f', file], { user: 'bob' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^lessl: NameCollision: create function greet failed: NameCollision: /);
    expect(r.stderr).toContain('applied: created function one version 1; created function two version 1\n');
    expect(r.stderr).toContain('not applied: create function greet\n');
    expect(await versions('bob')).toEqual({ one: 1, two: 1 });
    const fixed = await h.run(['up', '-f', stackFile('partial.yml', lines)], { user: 'bob' });
    expect(fixed.code, fixed.stderr).toBe(0);
    expect(fixed.stdout).toMatch(/= function one\s+unchanged: version 1\n {2}= function two\s+unchanged: version 1\n/);
    expect(await versions('bob')).toEqual({ one: 1, two: 1 });
  });

  test('images come first: one that cannot be made fails the run before any function is applied', async () => {
    const file = stackFile('img.yml', [
      'version: 1',
      'images:',
      '  tools:',
      '    source: { type: path, path: ./rootfs }',
      'functions:',
      '  tool:',
      '    image: tools',
      '    cmd: echo',
    ]);
    const plan = await h.run(['up', '-f', file, '--dry-run'], { user: 'bob' });
    expect(plan.stdout).toMatch(/\+ image\s+tools\s+create: from path\n {2}\+ function tool\s+create\n/);
    const r = await h.run(['up', '-f', file], { user: 'bob' }); // path sources are the admins'
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^lessl: PermissionDenied: create image tools failed: /);
    expect(r.stderr).toContain('applied: nothing\n');
    expect(r.stderr).toContain('not applied: create image tools; create function tool\n');
    expect((await versions('bob')).tool).toBeUndefined();
  });

  test('images are made from their source and marked; --prune removes only the images a stack made', async () => {
    const images = async (): Promise<Json[]> =>
      JSON.parse((await h.run(['--json', 'images', 'ls'], { user: 'bob' })).stdout) as Json[];
    expect((await h.run(['images', 'pull', 'registry.example/own:1', 'own'], { user: 'bob' })).code).toBe(0);
    const lines = [
      'version: 1',
      'images:',
      '  tools:',
      '    source: { type: registry, ref: registry.example/tools:1 }',
      'functions:',
      '  tool:',
      '    image: tools',
      '    cmd: echo tool',
    ];
    const r = await h.run(['up', '-f', stackFile('img.yml', lines)], { user: 'bob' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('created image tools\ncreated function tool version 1\n');
    expect((await images()).find((i) => i.name === 'tools')).toMatchObject({
      owner: 'bob',
      description: 'made by lessl up for bob',
    });
    expect(await h.run(['fn', 'invoke', 'tool'], { user: 'bob' })).toMatchObject({ code: 0, stdout: 'tool\n' });
    expect((await h.run(['up', '-f', stackFile('img.yml', lines)], { user: 'bob' })).stdout).toContain(
      'everything is unchanged\n',
    );
    const pruned = await h.run(['up', '-f', stackFile('img.yml', ['version: 1']), '--prune', '--yes'], { user: 'bob' });
    expect(pruned.code, pruned.stderr).toBe(0);
    expect(pruned.stdout).toMatch(/- function tool\s+remove\n.*- image\s+tools\s+remove\n/s);
    expect((await images()).map((i) => i.name).sort()).toEqual(['busybox', 'own']);
  });

  test('a service without the functions API: Unsupported, naming the route', async () => {
    const old = createHttpServer((req, res) => {
      res.writeHead(req.url === '/openapi.json' ? 200 : 404, { 'content-type': 'application/json' });
      res.end(req.url === '/openapi.json' ? JSON.stringify({ paths: { '/v1/tasks': { post: {} } } }) : '{}');
    });
    await new Promise<void>((resolve) => old.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = old.address() as AddressInfo;
      const r = await lessl(['up', '-f', stackFile('lessl.yml', BASE)], { url: `http://127.0.0.1:${port}`, token: 'lsl_x' });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^lessl: Unsupported: the service at \S+ has no route GET \/v1\/functions/);
    } finally {
      await new Promise((resolve) => old.close(resolve));
    }
  });

  /** `lessl ARGS` as ann on a pseudo-terminal (util-linux script), `answer` typed at it; killed after 60 s. */
  const onTerminal = (args: readonly string[], answer: string): Promise<{ code: number | null; out: string }> =>
    new Promise((resolve) => {
      const command = [process.execPath, BIN, ...args].map((a) => `'${a}'`).join(' ');
      const env = { ...process.env, LESSL_URL: h.url, LESSL_TOKEN: h.tokens.ann ?? '' };
      const child = spawn('script', ['-qec', command, '/dev/null'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      child.on('close', (code) => (clearTimeout(timer), resolve({ code, out })));
      child.stdin.end(answer);
    });

  test.skipIf(!existsSync('/usr/bin/script'))('on a terminal, removals are asked for: n keeps them, y removes them', async () => {
    expect((await h.run(['fn', 'deploy', 'asked', '--image', 'busybox', '--cmd', 'echo'])).code).toBe(0);
    const file = stackFile('asked.yml', BASE.slice(0, 5));
    const no = await onTerminal(['up', '-f', file, '--prune'], 'n\n');
    expect(no.code).toBe(1);
    expect(no.out).toContain('remove function asked? [y/N]');
    expect(no.out).toContain('lessl: Aborted: nothing was applied');
    expect(await versions()).toMatchObject({ asked: 1 });
    const yes = await onTerminal(['up', '-f', file, '--prune'], 'y\n');
    expect(yes.code, yes.out).toBe(0);
    expect(yes.out).toContain('removed function asked');
    expect((await versions()).asked).toBeUndefined();
  });
});
