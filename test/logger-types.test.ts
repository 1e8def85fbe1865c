/**
 * lessl's `Logger` is pino-compatible: a real `pino()` instance (and its children) type-checks
 * where lessl takes a logger, under the strict settings an embedder would use, and something
 * that is not a logger does not.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { strictTsc } from './strict-tsc.js';

const root = join(import.meta.dirname, '..');

const SOURCE = `
import { pino } from 'pino';
import { noopLogger, safeLogger, type Logger } from '@lessl/core';
import { openMemoryBackend } from '@lessl/memory';
import { openDockerBackend } from '@lessl/docker';

const p = pino({ level: 'debug' });
const asLogger: Logger = p;
const child: Logger = p.child({ component: 'lessl' });
void openMemoryBackend({ logger: p });
void openDockerBackend({ logger: p.child({ backend: 'docker' }), watch: false });
safeLogger(asLogger).info({ task: 'task://local/t' }, 'task started');
void [child, noopLogger];
// @ts-expect-error a console-like object without obj-first methods is no Logger
const notALogger: Logger = { info: 1 };
void notALogger;
export {};
`;

test('a real pino() instance is a lessl Logger (strict, skipLibCheck false)', async () => {
  const dir = join(root, 'test', '.logger-types');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'pino.ts'), SOURCE);
  const out = await strictTsc(dir, ['pino.ts']);
  expect(out).toBe('');
  rmSync(dir, { recursive: true, force: true });
}, 120_000);
