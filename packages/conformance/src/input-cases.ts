/**
 * Input cases: a task's stdin, on every backend. `run({ stdin })` with bytes, a string or an
 * async iterable reaches the process whole (8 MiB checked by size and digest); an empty input
 * and a task that takes input but is given none read end of file at once; a process that never
 * reads its input ends and nothing hangs (the producer of an endless stream is told); input for
 * a task bound into a running executor (`tasks.input`, then join, bind, commit); bad input,
 * `stdin` against a spec that says `interaction.stdin: false`, and input for a task whose spec
 * takes none are `InvalidEntry`; a task that restarts takes no input (`Unsupported`).
 */
import { createHash, randomBytes } from 'node:crypto';
import { text } from '@lessl/core';
import { needs } from './capabilities.js';
import { assert, fails, ok, sh, uniq, newImage } from './harness.js';
import { illTyped } from './hostile.js';
import type { Case, ImageData, SuiteOptions, TestBackend } from './types.js';

/** The chunks of `parts`, as an async iterable a caller would hand over. */
async function* streamOf(...parts: string[]): AsyncGenerator<Uint8Array, void, undefined> {
  for (const p of parts) yield new TextEncoder().encode(p);
}

/**
 * An endless stream of 64 KiB chunks: `state.started` turns true at its first chunk, `state.closed`
 * once a consumer that began reading lets it go.
 */
const endless = (state: { started: boolean; closed: boolean }): AsyncIterable<Uint8Array> => ({
  async *[Symbol.asyncIterator]() {
    try {
      state.started = true;
      for (;;) yield new Uint8Array(64 * 1024);
    } finally {
      state.closed = true;
    }
  },
});

/** Resolves once `cond` holds (polled), or fails naming `what` after many tries. */
const eventually = async (cond: () => boolean, what: string): Promise<void> => {
  for (let i = 0; i < 600 && !cond(); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(cond(), what);
};

export const inputCases = (o: SuiteOptions, data: ImageData): Case[] => {
  const cases: Case[] = [];
  const add = (name: string, fn: (l: TestBackend) => Promise<void>): void => void cases.push({ name: `input: ${name}`, fn });

  const image = (l: TestBackend): Promise<string> => newImage(l, data);
  const tasksNow = async (l: TestBackend): Promise<number> => (await ok(l.stores.task.list())).length;

  add('run({ stdin }) as bytes, a string and an async iterable: cat echoes each', async (l) => {
    const img = await image(l);
    const given = [new TextEncoder().encode('bytes in\n'), 'text in: é\n', streamOf('stream ', 'in ', 'parts\n')] as const;
    const want = ['bytes in\n', 'text in: é\n', 'stream in parts\n'];
    for (const [i, stdin] of given.entries()) {
      const r = await ok(l.run({ image: img, spec: { cmd: ['cat'] }, stdin }), `run ${i}`);
      assert.deepEqual([r.exitCode, text(r.stdout)], [0, want[i]]);
    }
  });

  add('8 MiB of input arrives whole: its size and its SHA-256 as the process counts them', async (l) => {
    const img = await image(l);
    const bytes = randomBytes(8 << 20);
    const digest = createHash('sha256').update(bytes).digest('hex');
    const size = await ok(l.run({ image: img, spec: sh('wc -c'), stdin: bytes }));
    assert.deepEqual([size.exitCode, text(size.stdout).trim()], [0, String(8 << 20)]);
    const sum = await ok(l.run({ image: img, spec: { cmd: ['sha256sum'] }, stdin: bytes }));
    assert.deepEqual([sum.exitCode, text(sum.stdout).split(' ')[0]], [0, digest]);
  });

  add('an empty input, and a task taking input given none: the process reads end of file at once', async (l) => {
    const img = await image(l);
    for (const stdin of ['', new Uint8Array(0), streamOf()]) {
      const r = await ok(l.run({ image: img, spec: { cmd: ['cat'] }, stdin }));
      assert.deepEqual([r.exitCode, r.stdout.byteLength], [0, 0]);
    }
    const r = await ok(l.run({ image: img, spec: { cmd: ['cat'], interaction: { stdin: true } } }));
    assert.deepEqual([r.exitCode, r.stdout.byteLength], [0, 0], 'no input: stdin closed at once');
  });

  add('a command that never reads its input ends: 20 MiB, or an endless stream whose producer is let go', async (l) => {
    const img = await image(l);
    const big = await ok(l.run({ image: img, spec: { cmd: ['true'] }, stdin: new Uint8Array(20 << 20) }));
    assert.equal(big.exitCode, 0);
    const state = { started: false, closed: false };
    const r = await ok(l.run({ image: img, spec: sh('exit 3'), stdin: endless(state) }));
    assert.equal(r.exitCode, 3);
    await eventually(() => !state.started || state.closed, 'the endless producer is told the process is gone (its return)');
  });

  add('bad input and stdin against interaction.stdin: false are InvalidEntry naming stdin; nothing is made', async (l) => {
    const img = await image(l);
    const before = await tasksNow(l);
    for (const stdin of [42, null, {}, [new Uint8Array(1)], illTyped({ [Symbol.iterator]: () => [][Symbol.iterator]() })]) {
      const e = await fails(l.run({ image: img, spec: { cmd: ['cat'] }, stdin: illTyped(stdin) }), 'InvalidEntry');
      assert.deepEqual([...e.keys], ['stdin']);
    }
    const e = await fails(
      l.run({ image: img, spec: { cmd: ['cat'], interaction: { stdin: false } }, stdin: 'x' }),
      'InvalidEntry',
    );
    assert.deepEqual([...e.keys], ['stdin']);
    assert.equal(await tasksNow(l), before, 'no task was left behind');
  });

  add(
    'tasks.input: a task whose spec takes no input is InvalidEntry; bad data InvalidEntry; a missing task NotFound',
    async (l) => {
      const plain = `task://local/${uniq('t')}`;
      const taking = `task://local/${uniq('t')}`;
      await ok(l.stores.task.create({ id: plain, spec: { cmd: ['cat'] } }));
      await ok(l.stores.task.create({ id: taking, spec: { cmd: ['cat'], interaction: { stdin: true } } }));
      const e1 = await fails(l.tasks.input(plain, 'x'), 'InvalidEntry');
      assert.deepEqual([...e1.keys], ['spec.interaction.stdin']);
      const e2 = await fails(l.tasks.input(taking, illTyped(7)), 'InvalidEntry');
      assert.deepEqual([...e2.keys], ['stdin']);
      await fails(l.tasks.input(`task://local/${uniq('none')}`, 'x'), 'NotFound');
      await fails(l.tasks.input(taking, 'x', illTyped({ follow: true })), 'InvalidEntry');
      await ok(l.tasks.input(taking, 'x'));
    },
  );

  cases.push(
    needs(o, 'execIntoRunning', {
      name: 'input: tasks.input, then join, bind and commit into a running executor: the process reads it; the next run reads none',
      fn: async (l) => {
        const img = await image(l);
        const [main, side] = [`task://local/${uniq('main')}`, `task://local/${uniq('side')}`];
        await ok(l.stores.task.create({ id: main, spec: sh('sleep 60') }));
        await ok(l.stores.task.create({ id: side, spec: { cmd: ['cat'], interaction: { stdin: true } } }));
        const h0 = await ok(l.composer.join(await ok(l.composer.handle(`executor://local/${uniq('x')}`)), img));
        const first = await ok(l.composer.commit(await ok(l.composer.bind(await ok(l.composer.join(h0, main)), main))));
        assert.ok(first.committed, 'the main task starts');
        await ok(l.tasks.input(side, streamOf('into ', 'a running executor\n')));
        const second = await ok(
          l.composer.commit(await ok(l.composer.bind(await ok(l.composer.join(first.handle, side)), side))),
        );
        assert.ok(second.committed, `the task bound into the running executor starts: ${JSON.stringify(second)}`);
        const r = await ok(l.tasks.wait(side));
        assert.deepEqual([r.exitCode, text(r.stdout)], [0, 'into a running executor\n']);
        const fresh = await ok(l.composer.handle(first.handle.executor));
        const again = await ok(l.composer.commit(await ok(l.composer.bind(fresh, side))));
        assert.ok(again.committed, 'bound again');
        const r2 = await ok(l.tasks.wait(side));
        assert.deepEqual([r2.exitCode, r2.stdout.byteLength], [0, 0], 'input is for one run: the next reads none');
        await ok(l.tasks.kill(main, { signal: 'KILL' }));
      },
    }),
  );

  cases.push(
    needs(o, 'restartPolicies', {
      name: 'input: a task that restarts takes no input: Unsupported naming spec.interaction.stdin at commit',
      fn: async (l) => {
        const img = await image(l);
        const task = `task://local/${uniq('t')}`;
        const spec = { cmd: ['cat'], daemon: true, restart: { policy: 'always' }, interaction: { stdin: true } };
        await ok(l.stores.task.create({ id: task, spec }));
        const h = await ok(l.composer.join(await ok(l.composer.handle(`executor://local/${uniq('x')}`)), img));
        const r = await ok(l.composer.commit(await ok(l.composer.bind(await ok(l.composer.join(h, task)), task))));
        assert.ok(!r.committed && r.error._tag === 'Unsupported' && r.error.feature === 'spec.interaction.stdin');
      },
    }),
  );
  return cases;
};
