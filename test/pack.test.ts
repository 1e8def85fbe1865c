/**
 * Every package packs into a tarball a user can install: LICENSE, README, the built code and its
 * declarations, and no tests. (`npm pack --dry-run`, so nothing is written.) Every package is
 * ready for its first publish (`npm publish --dry-run`, ranges, repository, public access, peers),
 * and every runtime dependency runs on the Node floor the packages state.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import semver from 'semver';
import { expect, test } from 'vitest';

const root = join(import.meta.dirname, '..');
const packages = readdirSync(join(root, 'packages'));

test.each(packages)('packages/%s packs with LICENSE, README, dist and types', async (p) => {
  const dir = join(root, 'packages', p);
  const { stdout } = await promisify(execFile)('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: dir });
  const [info] = JSON.parse(stdout) as { files: { path: string }[] }[];
  const files = (info?.files ?? []).map((f) => f.path);
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { types?: string; main?: string };
  expect(files).toEqual(expect.arrayContaining(['LICENSE', 'README.md', 'package.json']));
  expect(files).toContain(String(pkg.main).replace(/^\.\//, ''));
  expect(files).toContain(String(pkg.types).replace(/^\.\//, ''));
  expect(files.filter((f) => f.startsWith('test/'))).toEqual([]);
});

test('@lessl/docker ships the in-container agent, built from source by npm run build', async () => {
  const dir = join(root, 'packages', 'docker');
  const { stdout } = await promisify(execFile)('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: dir });
  const [info] = JSON.parse(stdout) as { files: { path: string; mode: number }[] }[];
  const agent = (info?.files ?? []).find((f) => f.path === 'agent/lessl-agent');
  expect(agent?.mode).toBe(0o755);
  expect((info?.files ?? []).map((f) => f.path)).toContain('agent/lessl-agent.c');
});

interface Manifest {
  name: string;
  private?: boolean;
  engines?: { node?: string };
  repository?: { url?: string; directory?: string };
  publishConfig?: { access?: string };
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
}
const manifest = (dir: string): Manifest => JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Manifest;
const floor = String(manifest(root).engines?.node);

test('every runtime dependency in the lockfile runs on the Node floor the packages state (engines)', () => {
  const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean; engines?: { node?: unknown } | string[] }>;
  };
  const tooNew = Object.entries(lock.packages)
    .filter(([path, p]) => path !== '' && p.dev !== true && !Array.isArray(p.engines))
    .map(([path, p]) => [path, (p.engines as { node?: unknown } | undefined)?.node] as const)
    .filter(([, node]) => typeof node === 'string' && !semver.subset(floor, node));
  expect(tooNew).toEqual([]);
  for (const p of packages) expect([p, manifest(join(root, 'packages', p)).engines?.node]).toEqual([p, floor]);
});

test.each(packages)(
  'packages/%s is ready to publish: ranges for @lessl/*, repository, public access, peers, no @types at run time',
  (p) => {
    const m = manifest(join(root, 'packages', p));
    const deps = m.dependencies ?? {};
    expect(Object.entries(deps).filter(([k, v]) => k.startsWith('@lessl/') && semver.valid(v) !== null)).toEqual([]);
    expect(m.repository).toMatchObject({ url: expect.stringContaining('github.com/lessl/lessl'), directory: `packages/${p}` });
    expect(m.publishConfig).toEqual({ access: 'public' });
    expect(Object.keys(deps).filter((k) => k.startsWith('@types/') || k === 'fp-ts' || k === 'io-ts')).toEqual([]);
    const usesFp = readdirSync(join(root, 'packages', p, 'src'), { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.ts'))
      .some((f) => /from 'fp-ts|from 'io-ts/.test(readFileSync(join(root, 'packages', p, 'src', f), 'utf8')));
    if (usesFp) expect(m.peerDependencies).toHaveProperty('fp-ts');
  },
);

test.each(packages)(
  'packages/%s: npm publish --dry-run succeeds with public access and nothing for npm to correct',
  async (p) => {
    const dir = join(root, 'packages', p);
    const { stdout, stderr } = await promisify(execFile)('npm', ['publish', '--dry-run', '--json', '--ignore-scripts'], {
      cwd: dir,
    });
    const name = manifest(dir).name;
    expect((JSON.parse(stdout) as Record<string, { name: string }>)[name]?.name).toBe(name);
    expect(stderr).toContain('public access');
    expect(stderr).not.toMatch(/auto-corrected|errors corrected/);
  },
);

test('the lessl bin is a committed file, so npm ci links it before any build; after the build, npx --no-install lessl runs it', async () => {
  const cli = manifest(join(root, 'packages', 'cli')) as Manifest & { bin?: Record<string, string>; version: string };
  const bin = String(cli.bin?.lessl);
  const { stdout: tracked } = await promisify(execFile)('git', ['ls-files', '-s', join('packages', 'cli', bin)], { cwd: root });
  expect(tracked).toMatch(/^100755 /);
  const { stdout } = await promisify(execFile)('npx', ['--no-install', 'lessl', '--version'], { cwd: root });
  expect(stdout).toBe(`${cli.version}\n`);
  // before a build, the bin says how to build instead of failing on a missing file
  const bare = mkdtempSync(join(tmpdir(), 'lessl-bin-'));
  mkdirSync(join(bare, 'bin'));
  copyFileSync(join(root, 'packages', 'cli', bin), join(bare, 'bin', 'lessl.js'));
  const r = await promisify(execFile)(process.execPath, [join(bare, 'bin', 'lessl.js'), '--version']).catch(
    (e: { code: number; stderr: string }) => e,
  );
  rmSync(bare, { recursive: true, force: true });
  expect(r).toMatchObject({ code: 1, stderr: expect.stringContaining('npm run build') });
});
