/**
 * An embedder, as a new user would be: every package packed, the tarballs installed into a fresh
 * project with only their declared dependencies (resolved to the newest versions their ranges
 * allow, plus the newest tar-fs), a small program compiled with `strict` and `skipLibCheck:
 * false`, then run against the engine: an image from a tar-fs `pack()` stream, a task run with
 * `run()`, its output read with `text()`.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect, test } from 'vitest';

const root = join(import.meta.dirname, '..');
const run = promisify(execFile);
const EMBEDDER = `
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pack } from 'tar-fs';
import { LesslError, text, unwrap, type TaskResult } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge } from '@lessl/docker';
import { openMemoryBackend } from '@lessl/memory';

const dir = mkdtempSync(join(tmpdir(), 'embedder-'));
writeFileSync(join(dir, 'greeting.txt'), 'hello from an embedder');
const lessl = await unwrap(openDockerBackend());
try {
  await unwrap(lessl.stores.image.create({ id: 'image://local/base', data: await busyboxRootfsBytes() }));
  await unwrap(lessl.stores.image.create({ id: 'image://local/app', parent: 'image://local/base', data: pack(dir) }));
  const r: TaskResult = await unwrap(lessl.run({ image: 'image://local/app', spec: { cmd: ['cat', '/greeting.txt'] } }));
  const memory = await unwrap(openMemoryBackend());
  const m = await unwrap(memory.run({ image: 'image://local/none', spec: { cmd: ['echo', 'x'] } })).then(
    () => 'ran',
    (e: LesslError) => e.tag,
  );
  console.log(JSON.stringify({ exitCode: r.exitCode, out: text(r.stdout), memory: m }));
  await memory.close();
} finally {
  await lessl.close();
  await purge(lessl.docker, lessl.instanceId);
}
`;

test('packed packages install alone, compile with skipLibCheck false and run against the engine', async () => {
  const work = mkdtempSync(join(tmpdir(), 'lessl-embedder-'));
  try {
    for (const p of ['core', 'kit', 'level', 'memory', 'docker'])
      await run('npm', ['pack', '--pack-destination', work, '--ignore-scripts'], { cwd: join(root, 'packages', p) });
    const tarballs = readdirSync(work).filter((f) => f.endsWith('.tgz'));
    expect(tarballs).toHaveLength(5);
    writeFileSync(join(work, 'package.json'), JSON.stringify({ name: 'embedder', private: true, type: 'module' }));
    await run(
      'npm',
      [
        'install',
        '--no-audit',
        '--no-fund',
        ...tarballs.map((t) => `./${t}`),
        'fp-ts',
        'io-ts',
        'tar-fs',
        'typescript@6',
        '@types/node@20',
      ],
      { cwd: work, maxBuffer: 16 * 1024 * 1024 },
    );
    writeFileSync(join(work, 'main.ts'), EMBEDDER);
    writeFileSync(
      join(work, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          skipLibCheck: false,
          types: ['node'],
          outDir: 'out',
        },
        files: ['main.ts'],
      }),
    );
    const tsc = await run(process.execPath, [join(work, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', work]).then(
      () => '',
      (e: { stdout?: string }) => e.stdout ?? String(e),
    );
    expect(tsc).toBe('');
    const { stdout } = await run(process.execPath, [join(work, 'out', 'main.js')], { cwd: work });
    expect(JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}')).toEqual({
      exitCode: 0,
      out: 'hello from an embedder',
      memory: 'NotFound',
    });
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}, 300_000);
