/**
 * The READMEs' code compiles as written: every ```ts block of README.md and packages/*\/README.md
 * is written out as a module and type-checked with the strict settings an embedder would use
 * (`skipLibCheck: false`), against the built packages.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { strictTsc } from './strict-tsc.js';

const root = join(import.meta.dirname, '..');
const readmes = ['README.md', ...readdirSync(join(root, 'packages')).map((p) => join('packages', p, 'README.md'))];

/** The ```ts blocks of a Markdown file. */
const blocks = (file: string): string[] => {
  let md: string;
  try {
    md = readFileSync(join(root, file), 'utf8');
  } catch {
    return [];
  }
  return [...md.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1] ?? '');
};

test('every TypeScript block of the READMEs compiles (strict, skipLibCheck false)', async () => {
  const dir = join(root, 'test', '.readme');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  for (const readme of readmes)
    blocks(readme).forEach((code, i) => {
      const name = `${readme.replace(/[/.]/g, '_')}_${i}.ts`;
      // each block is its own module (top-level await allowed)
      writeFileSync(join(dir, name), `${code}\nexport {};\n`);
      files.push(name);
    });
  expect(files.length).toBeGreaterThanOrEqual(readmes.length);
  const out = await strictTsc(dir, files);
  expect(out).toBe('');
  rmSync(dir, { recursive: true, force: true });
}, 120_000);
