/**
 * Every package packs into a tarball a user can install: LICENSE, README, the built code and its
 * declarations, and no tests. (`npm pack --dry-run`, so nothing is written.)
 */
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
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
