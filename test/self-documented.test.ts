/**
 * The project documents itself: no source file, doc or README points to a document outside the
 * repository (design notes, issue numbers of a tracker a reader does not have).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { expect, test } from 'vitest';

const root = join(import.meta.dirname, '..');
const SKIP = new Set(['node_modules', 'dist', 'api', '.snippets']);

const files = (dir: string): string[] =>
  readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (SKIP.has(name) || name.startsWith('.')) return [];
    if (statSync(path).isDirectory()) return files(path);
    return /\.(ts|js|md|sh)$/.test(name) ? [path] : [];
  });

test('no file refers to a document outside the repository', () => {
  const outside = /DESIGN\.md|\.\.\/shared|\bseed 00\d\b|\(issue \d+/;
  const found = ['packages', 'docs', 'examples', 'scripts', 'bench', 'README.md']
    .flatMap((p) => (statSync(join(root, p)).isDirectory() ? files(join(root, p)) : [join(root, p)]))
    .flatMap((f) =>
      readFileSync(f, 'utf8')
        .split('\n')
        .flatMap((line, i) => (outside.test(line) ? [`${relative(root, f)}:${i + 1}: ${line.trim()}`] : [])),
    );
  expect(found).toEqual([]);
});
