import { Writable } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import { pino } from 'pino';
import { expect, test } from 'vitest';
import { text, unwrap, type CredentialResolver, type Logger } from '@lessl/core';
import { openMemoryBackend } from '@lessl/memory';

interface Line {
  readonly level: string;
  readonly obj: Record<string, unknown>;
  readonly msg?: string;
}

/** A logger that keeps every line (and its children's, with their bindings). */
const recording = (lines: Line[], bindings: Record<string, unknown> = {}): Logger => {
  const at =
    (level: string) =>
    (obj: object, msg?: string): void =>
      void lines.push({
        level,
        obj: { ...bindings, ...(obj as Record<string, unknown>) },
        ...(msg === undefined ? {} : { msg }),
      });
  return {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: (b) => recording(lines, { ...bindings, ...b }),
  };
};

const SECRET = 'hunter2-never-logged';
const credentials: CredentialResolver = async () => ({ env: { TOKEN: SECRET }, files: { '/run/secrets/t': SECRET } });

test('a backend reports open, task start and task end (id, exit code, reason, duration) and never a credential', async () => {
  const lines: Line[] = [];
  const lessl = await unwrap(openMemoryBackend({ logger: recording(lines), credentials }));
  try {
    await unwrap(lessl.stores.image.create({ id: 'image://local/base', data: new Uint8Array() }));
    const spec = { cmd: ['sh', '-c', 'echo $TOKEN; exit 3'], credentials: [{ name: 'TOKEN', ref: 'vault:ci' }] };
    const r = await unwrap(lessl.run({ image: 'image://local/base', spec, keep: true }));
    expect([r.exitCode, text(r.stdout)]).toEqual([3, `${SECRET}\n`]); // the task sees it; the log must not
    const task = r.id.key;
    expect(lines.find((l) => l.msg === 'backend opened')?.obj).toMatchObject({ recovered: 0, resumed: 0, lost: 0 });
    const started = lines.filter((l) => l.msg === 'task started');
    expect(started.map((l) => l.obj)).toEqual([
      expect.objectContaining({ task, run: 1, executor: expect.stringMatching(/^executor:\/\//) }),
    ]);
    const ended = lines.filter((l) => l.msg === 'task ended');
    expect(ended).toHaveLength(1);
    expect(ended[0]?.level).toBe('info');
    expect(ended[0]?.obj).toMatchObject({ task, run: 1, exitCode: 3, reason: 'exited' });
    expect(ended[0]?.obj.durationMs).toEqual(expect.any(Number));
    expect(JSON.stringify(lines)).not.toContain(SECRET);
  } finally {
    await lessl.close();
  }
});

test('a real pino logger works as is; a logger that throws never breaks an operation', async () => {
  const out: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      out.push(chunk.toString());
      done();
    },
  });
  const lessl = await unwrap(openMemoryBackend({ logger: pino({ level: 'debug' }, sink), credentials }));
  await unwrap(lessl.stores.image.create({ id: 'image://local/base', data: new Uint8Array() }));
  const spec = { cmd: ['sh', '-c', 'echo $TOKEN'], credentials: [{ name: 'TOKEN', ref: 'vault:ci' }] };
  const r = await unwrap(lessl.run({ image: 'image://local/base', spec }));
  await lessl.close();
  const json = out
    .join('')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { msg?: string; task?: string; exitCode?: number });
  expect(json.find((l) => l.msg === 'task ended')).toMatchObject({ task: r.id.key, exitCode: 0 });
  expect(out.join('')).not.toContain(SECRET);

  const boom = (): never => {
    throw new Error('logger down');
  };
  const throwing: Logger = { debug: boom, info: boom, warn: boom, error: boom, child: boom };
  const l2 = await unwrap(openMemoryBackend({ logger: throwing }));
  await unwrap(l2.stores.image.create({ id: 'image://local/base', data: new Uint8Array() }));
  expect((await unwrap(l2.run({ image: 'image://local/base', spec: { cmd: ['true'] } }))).exitCode).toBe(0);
  await l2.close();
});

test('a logger that is not one is InvalidEntry naming logger; no logger logs nothing', async () => {
  for (const logger of [{}, { info: () => undefined }, 'pino', { debug: 1, info: 1, warn: 1, error: 1 }]) {
    const r = await openMemoryBackend({ logger: logger as never })();
    expect(E.isLeft(r) && r.left._tag === 'InvalidEntry' && r.left.keys).toEqual(['logger']);
  }
  const l = await unwrap(openMemoryBackend());
  await l.close();
});
