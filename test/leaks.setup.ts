/**
 * Setup of every test file: nothing may escape a test. Vitest already fails the run on an
 * unhandled rejection or an uncaught exception (kept so: `dangerouslyIgnoreUnhandledErrors` is
 * off in vitest.config.ts). This adds the leaks Node only warns about: a rejection handled too
 * late (it was unhandled for a while) and listeners piling up on one emitter. Either fails the
 * test during which it was reported. An uncaught exception or unhandled rejection also fails the
 * test during which it happened (a process guard, as in the conformance suite's hostile cases):
 * nothing of lessl may throw outside the TaskEither it returns, so a test that provokes an escape
 * is named by it.
 */
import { afterEach } from 'vitest';

const LEAKS = new Set(['PromiseRejectionHandledWarning', 'MaxListenersExceededWarning']);
const leaked: string[] = [];

process.on('warning', (w) => {
  if (LEAKS.has(w.name)) leaked.push(`${w.name}: ${w.message}`);
});
const show = (e: unknown): string => (e instanceof Error ? (e.stack ?? e.message) : String(e));
process.on('uncaughtException', (e) => leaked.push(`an uncaught exception: ${show(e)}`));
process.on('unhandledRejection', (e) => leaked.push(`an unhandled rejection: ${show(e)}`));

afterEach(async () => {
  // warnings are emitted on a later tick than the leak itself
  await new Promise((r) => setImmediate(r));
  if (leaked.length > 0) throw new Error(`leaked during this test:\n${leaked.splice(0).join('\n')}`);
});
