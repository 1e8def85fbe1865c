// Compiles TypeScript files the way an embedder with a strict project would (strict, NodeNext,
// skipLibCheck false), with this repository's tsc; shared by the README and logger-type checks.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const root = join(import.meta.dirname, '..');

/**
 * Writes a strict tsconfig listing `files` into `dir`, runs tsc on it; answers its diagnostics ('' when clean).
 * With `outDir` the files are also emitted there (to be run), else nothing is written.
 */
export const strictTsc = async (dir: string, files: readonly string[], outDir?: string): Promise<string> => {
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        lib: ['ES2023'],
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        ...(outDir === undefined ? { noEmit: true } : { outDir }),
        skipLibCheck: false,
        types: ['node'],
      },
      files,
    }),
  );
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  return promisify(execFile)(process.execPath, [tsc, '-p', join(dir, 'tsconfig.json')]).then(
    () => '',
    (e: { stdout?: string }) => e.stdout ?? String(e),
  );
};
