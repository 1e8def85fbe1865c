/**
 * Every code block of README.md, packages/*\/README.md and docs/*.md is checked, so a stale
 * snippet fails the build:
 * - ```ts blocks are compiled together the way an embedder with a strict project would
 *   (strict, NodeNext, `skipLibCheck: false`) against the built packages, and then each one runs
 *   as its own program in a fresh working directory, on the real Docker engine (and the test
 *   engines where a snippet names them); it must exit 0 on its own (close what it opens);
 * - ```json blocks parse;
 * - ```yaml blocks are stack files (`lessl up -f lessl.yml`) the CLI's validator takes;
 * - ```sh blocks: every command they name exists (`npm run` scripts, `scripts/*`, test files,
 *   `lessl` subcommands answer `--help`, `npm install` names packages of this repository or
 *   their declared dependencies, `curl` paths are in the service's OpenAPI document).
 * A block in another language fails the test: add a check for it here first.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { AbstractLevel } from 'abstract-level';
import { Level } from 'level';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { formatProblem, parseStack } from '@lessl/cli';
import { purge } from '@lessl/docker';
import { Registry } from '@lessl/level';
import { unwrap } from '@lessl/core';
import { openMemoryBackend } from '@lessl/memory';
import { createServer, ownerAuthorizer } from '@lessl/service';
import { allSnippets, root, type Snippet } from './snippets.js';
import { strictTsc } from './strict-tsc.js';

const run = promisify(execFile);
const snippets = allSnippets();
const byLang = (lang: string): Snippet[] => snippets.filter((s) => s.lang === lang);
const dir = join(root, 'test', '.snippets');
const usesVitest = (s: Snippet): boolean => /from 'vitest'/.test(s.code);
/** The module name of a block: blocks that declare vitest tests are `*.test` files. */
const fileOf = (s: Snippet): string => (usesVitest(s) ? `${s.name}.test` : s.name);

test('every code block is in a language the snippet tests check', () => {
  const unchecked = snippets.filter((s) => !['ts', 'json', 'sh', 'yaml'].includes(s.lang));
  expect(unchecked.map((s) => `${s.file}:${s.line} ${s.lang}`)).toEqual([]);
  expect(byLang('ts').length).toBeGreaterThanOrEqual(15);
});

describe('TypeScript blocks compile strictly and run', () => {
  let diagnostics = '';
  beforeAll(async () => {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const files = byLang('ts').map((s) => {
      writeFileSync(join(dir, `${fileOf(s)}.ts`), `${s.code}\nexport {};\n`);
      return `${fileOf(s)}.ts`;
    });
    diagnostics = await strictTsc(dir, files, 'out');
  }, 180_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('the blocks compile (strict, skipLibCheck false)', () => {
    expect(diagnostics).toBe('');
  });

  test.each(byLang('ts').map((s) => [`${s.file}:${s.line}`, s] as const))(
    '%s runs and exits 0',
    async (_where, s) => {
      expect(diagnostics).toBe('');
      const cwd = mkdtempSync(join(tmpdir(), 'lessl-snippet-'));
      try {
        // a block that declares vitest tests runs under vitest, any other as a plain program
        const argv = usesVitest(s)
          ? [join(root, 'node_modules', 'vitest', 'vitest.mjs'), 'run', '--config', vitestConfig(), `${fileOf(s)}.js`]
          : [join(dir, 'out', `${fileOf(s)}.js`)];
        const r = await run(process.execPath, argv, {
          cwd,
          timeout: 120_000,
          env: { ...process.env, LESSL_ADMIN_TOKEN: 'lsl_snippet_admin_token_0123456789' },
        }).then(
          (o) => ({ code: 0, out: o.stdout + o.stderr }),
          (e: { code?: number; stdout?: string; stderr?: string; signal?: string }) => ({
            code: e.code ?? e.signal ?? -1,
            out: `${e.stdout ?? ''}${e.stderr ?? ''}`,
          }),
        );
        expect(r, `${s.file}:${s.line}\n${r.out}`).toMatchObject({ code: 0 });
      } finally {
        await purgeRegistries(cwd);
        rmSync(cwd, { recursive: true, force: true });
      }
    },
    150_000,
  );
});

/** A vitest config that runs the compiled blocks (and nothing of the repository's own suite). */
const vitestConfig = (): string => {
  const file = join(dir, 'out', 'vitest.config.mjs');
  writeFileSync(file, `export default { test: { root: ${JSON.stringify(join(dir, 'out'))}, include: ['*.test.js'] } };\n`);
  return file;
};

/** Removes from the engine what a snippet's on-disk registries (under `cwd`) may have left. */
const purgeRegistries = async (cwd: string): Promise<void> => {
  const docker = new Docker();
  for (const entry of readdirSync(cwd, { withFileTypes: true })) {
    const location = join(cwd, entry.name);
    if (!entry.isDirectory() || !existsSync(join(location, 'CURRENT'))) continue;
    const registry = await Registry.open({ location });
    const instance = registry.instanceId;
    await registry.close();
    await purge(docker, instance);
  }
};

/** Removes from the engine what a stopped service with data directory `data` left there (its busybox image). */
/** Whether something listens on a loopback port. */
const portTaken = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => (s.destroy(), resolve(true))).once('error', () => resolve(false));
  });

const purgeService = async (data: string): Promise<void> => {
  if (!existsSync(join(data, 'db'))) return;
  const root = new Level<string, string>(join(data, 'db'), { valueEncoding: 'utf8' });
  await root.open();
  const registry = await Registry.open({ db: root.sublevel('reg') as unknown as AbstractLevel<string, string, string> });
  const instance = registry.instanceId;
  await registry.close();
  await root.close();
  await purge(new Docker(), instance);
};

test('JSON blocks parse', () => {
  for (const s of byLang('json')) expect(() => JSON.parse(s.code) as unknown, `${s.file}:${s.line}`).not.toThrow();
});

test('YAML blocks are valid stack files', () => {
  for (const s of byLang('yaml')) {
    const r = parseStack(s.code);
    expect(r.ok ? [] : r.problems.map((p) => formatProblem(`${s.file}:${s.line}+`, p))).toEqual([]);
  }
});

describe('shell blocks name only commands that exist', () => {
  const lines = byLang('sh').flatMap((s) =>
    s.code
      .replace(/\\\n/g, ' ')
      .split('\n')
      .map((l) => ({ s, l: l.replace(/#.*$/, '').trim() })),
  );
  const where = (x: { s: Snippet; l: string }): string => `${x.s.file}:${x.s.line}: ${x.l}`;
  const pkg = (file: string): Record<string, Record<string, string> | undefined> =>
    JSON.parse(readFileSync(join(root, file), 'utf8')) as Record<string, Record<string, string> | undefined>;
  const rootPkg = pkg('package.json');

  test('npm scripts and commands', () => {
    const scripts = Object.keys(rootPkg['scripts'] ?? {});
    for (const x of lines)
      for (const m of x.l.matchAll(/\bnpm (?:run )?([\w:-]+)/g)) {
        const name = m[1] ?? '';
        if (['ci', 'install', 'i', 'test', 'start', 'run'].includes(name) && !x.l.includes(`npm run ${name}`)) continue;
        expect(scripts, where(x)).toContain(name);
      }
  });

  test('npm install names packages of this repository or their declared dependencies', () => {
    const known = new Set<string>();
    for (const p of readdirSync(join(root, 'packages'))) {
      const j = pkg(join('packages', p, 'package.json'));
      known.add(String(j['name']));
      for (const field of ['dependencies', 'peerDependencies', 'devDependencies'])
        for (const d of Object.keys(j[field] ?? {})) known.add(d);
    }
    for (const field of ['dependencies', 'devDependencies']) for (const d of Object.keys(rootPkg[field] ?? {})) known.add(d);
    for (const x of lines) {
      const m = /\bnpm (?:install|i)\b(.*)$/.exec(x.l);
      if (!m) continue;
      const names = (m[1] ?? '').split(/\s+/).filter((w) => w && !w.startsWith('-'));
      expect(names.length, where(x)).toBeGreaterThan(0);
      for (const n of names) expect([...known], where(x)).toContain(n);
    }
  });

  test('scripts and test files exist', () => {
    for (const x of lines)
      for (const m of x.l.matchAll(/\b((?:scripts|packages|test|bench|examples)\/[\w./-]+\.(?:sh|ts|js))\b/g))
        expect(existsSync(join(root, m[1] ?? '')), where(x)).toBe(true);
  });

  test('every lessl subcommand exists (answers --help)', async () => {
    const bin = join(root, 'packages', 'cli', 'dist', 'bin.js');
    const commands = new Set<string>();
    for (const x of lines)
      for (const m of x.l.matchAll(/(?:^|[|&;(]\s*|\bnpx )lessl((?: [a-z][\w-]*){1,2})/g)) commands.add((m[1] ?? '').trim());
    expect(commands.size).toBeGreaterThan(0);
    for (const c of commands) {
      const words = c.split(' ');
      // `lessl users add` is a subcommand pair; `lessl run hello.json` is a command and an argument
      const tryHelp = (w: string[]) => run(process.execPath, [bin, ...w, '--help']).then((o) => o.stdout);
      const help = await tryHelp(words).catch(() => tryHelp(words.slice(0, 1)));
      expect(help, `lessl ${c}`).toMatch(/Usage:/);
    }
  });

  test("docs/cli.md's first hour runs as written: serve, run the example, curl it, stop", async () => {
    const block = byLang('sh').find((s) => s.file === 'docs/cli.md' && s.code.includes('lessl serve --busybox &'));
    expect(block, 'docs/cli.md shows how to start the service and run the example').toBeDefined();
    // its first line is the clone's set-up (`npm ci && npm run build`), done already; the rest runs in a
    // fresh directory and home, with the clone's bins on PATH as the block's `export PATH` puts them
    const [setup, ...rest] = (block?.code ?? '').split('\n');
    expect(setup).toMatch(/^npm ci && npm run build/);
    // the block serves on 8080 as written: a server already there would answer its curls instead
    expect(await portTaken(8080), 'port 8080 is free for the lessl serve of the block').toBe(false);
    const cwd = mkdtempSync(join(tmpdir(), 'lessl-first-hour-'));
    try {
      // on any exit the service is stopped and waited for (its database is read below)
      const script = `set -e\ntrap 's=$?; kill $(jobs -p) 2>/dev/null || true; wait; exit $s' EXIT\n${rest.join('\n')}\nwait\n`;
      const r = await run('bash', ['-c', script], {
        cwd,
        timeout: 120_000,
        env: {
          ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'LESSL_DATA' && !k.startsWith('LESSL_'))),
          HOME: cwd,
          XDG_DATA_HOME: join(cwd, '.local', 'share'),
          PATH: `${join(root, 'node_modules', '.bin')}:${process.env['PATH'] ?? ''}`,
        },
      }).then(
        (o) => ({ code: 0, out: o.stdout, err: o.stderr }),
        (e: { code?: number; stdout?: string; stderr?: string }) => ({
          code: e.code ?? -1,
          out: e.stdout ?? '',
          err: e.stderr ?? '',
        }),
      );
      // a failure shows what the commands printed
      const told = `exit ${r.code}\n--- stdout\n${r.out}\n--- stderr\n${r.err}`;
      expect(r.code, told).toBe(0);
      expect(r.out, told).toContain('Hello World\nvalue\n'); // lessl run's output
      expect(r.out, told).toContain('"state":"exited","exitCode":0'); // curl's finished task
    } finally {
      await purgeService(join(cwd, '.local', 'share', 'lessl'));
      rmSync(cwd, { recursive: true, force: true });
    }
  }, 150_000);

  test('curl reaches paths of the service API', async () => {
    const backend = await unwrap(openMemoryBackend({ authorize: ownerAuthorizer }));
    const server = await createServer({ backend, adminToken: 'lsl_snippet_admin_token_0123456789' });
    try {
      const url = await server.listen({ host: '127.0.0.1', port: 0 });
      const doc = (await (await fetch(`${url}/openapi.json`)).json()) as { paths: Record<string, unknown> };
      // a path is the document's as written (`/v1/tasks/{id}`) or one it names (`/v1/functions/shout`)
      const templates = Object.keys(doc.paths).map((p) => new RegExp(`^${p.replace(/\{[^}]+\}/g, '[^/{}]+')}$`));
      let seen = 0;
      for (const x of lines)
        for (const m of x.l.matchAll(/https?:\/\/[\w.:]+(\/[\w/{}-]*)/g)) {
          if (!x.l.includes('curl')) continue;
          seen++;
          const path = m[1] ?? '';
          expect(Object.keys(doc.paths).includes(path) || templates.some((t) => t.test(path)), `${where(x)}: ${path}`).toBe(true);
        }
      expect(seen).toBeGreaterThan(0);
    } finally {
      await server.close();
    }
  });
});

/** A sample output (a Markdown block) as a pattern: `…` stands for any text, a line of just `…` for any lines. */
const samplePattern = (sample: string): RegExp =>
  new RegExp(
    `^${sample
      .trimEnd()
      .split('\n')
      .map((l) => (l.trim() === '…' ? '(?:.*\\n)*?' : `${l.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/…/g, '.*')}\\n`))
      .join('')}`,
    'm',
  );

test('the quick start prints what the README shows', async () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const sample = /^```\n(task {4}task:\/\/[\s\S]*?)^```$/m.exec(readme)?.[1];
  expect(sample, 'the README shows the quick start output').toBeDefined();
  const { stdout } = await run(process.execPath, [join(root, 'examples', 'dist', 'quickstart.js')], { timeout: 120_000 });
  const shown = stdout.slice(stdout.indexOf('task    task://'));
  expect(shown).toMatch(samplePattern(sample ?? ''));
}, 150_000);
