/**
 * Issue 15, item 14: a registry directory another process holds is refused with a message that
 * says so and names the directory (not only "could not open the registry").
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { once } from 'node:events';
import * as E from 'fp-ts/lib/Either.js';
import { afterEach, expect, test } from 'vitest';
import { openMemoryBackend } from '@lessl/memory';

let holder: ChildProcess | undefined;

afterEach(async () => {
  if (holder !== undefined && holder.exitCode === null && holder.signalCode === null) {
    holder.kill();
    await once(holder, 'exit');
  }
  holder = undefined;
});

/** Starts a child process that opens the registry at `location` and holds it until killed. */
const holdIn = async (location: string): Promise<ChildProcess> => {
  const script = [
    "import { Registry } from '@lessl/level';",
    `await Registry.open({ location: ${JSON.stringify(location)} });`,
    "process.stdout.write('held\\n');",
    'setInterval(() => undefined, 1000);',
  ].join('\n');
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    cwd: resolve(import.meta.dirname, '..'),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [chunk] = (await once(child.stdout as NodeJS.ReadableStream, 'data')) as [Buffer];
  expect(chunk.toString()).toBe('held\n');
  return child;
};

test('a registry directory held by another process: RuntimeError saying another process holds it, naming the path', async () => {
  const location = mkdtempSync(join(tmpdir(), 'lessl-locked-'));
  holder = await holdIn(location);
  const r = await openMemoryBackend({ registry: { location } })();
  expect(E.isLeft(r) && r.left._tag).toBe('RuntimeError');
  const message = E.isLeft(r) ? r.left.message : '';
  expect(message).toContain('another process holds it');
  expect(message).toContain(resolve(location));
  // once the other process is gone, the directory opens
  holder.kill();
  await once(holder, 'exit');
  const l = await openMemoryBackend({ registry: { location } })();
  expect(E.isRight(l)).toBe(true);
  if (E.isRight(l)) await l.right.close();
});
