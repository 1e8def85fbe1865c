/**
 * Task lifecycle cases (docs/lifecycle.md): commit starts a task and returns; wait before and
 * after the end; logs from an offset and live; kill; deadline; abort; run(); exactly one
 * `unbound` per run; concurrent runs; NotFound and PermissionDenied; results that survive a reopen.
 *
 * The specs use only `sh -c` with echo, sleep, exit and `>&2`: busybox runs them, and so does
 * the memory backend's tiny shell.
 */
import { text, type LesslEvent, type OutputChunk, type TaskResult } from '@lessl/core';
import { assert, fails, ok, recording, STORES, sh, uniq, newImage } from './harness.js';
import { needs, type Capability } from './capabilities.js';
import { illTyped } from './hostile.js';
import type { Case, SuiteOptions, TestBackend } from './types.js';

export const lifecycleCases = (o: SuiteOptions, data: () => Promise<Uint8Array>): Case[] => {
  const cases: Case[] = [];
  /** Adds a case; one that `need`s a capability runs on a backend whose manifest claims it. */
  const add = (name: string, fn: (l: TestBackend) => Promise<void>, need?: Capability): void => {
    const c = { name: `lifecycle: ${name}`, fn };
    cases.push(need === undefined ? c : needs(o, need, c));
  };

  const image = (l: TestBackend): Promise<string> => newImage(l, data);
  /** Creates a task and starts it in a new executor; answers the task ID once the commit returned. */
  const start = async (l: TestBackend, img: string, spec: Record<string, unknown>): Promise<{ task: string; x: string }> => {
    const task = `task://local/${uniq('t')}`;
    const x = `executor://local/${uniq('x')}`;
    await ok(l.stores.task.create({ id: task, spec }), 'create task');
    let h = await ok(l.composer.handle(x));
    h = await ok(l.composer.join(h, img));
    h = await ok(l.composer.bind(await ok(l.composer.join(h, task)), task));
    const r = await ok(l.composer.commit(h), 'commit');
    assert.ok(r.committed, `commit: ${JSON.stringify(r)}`);
    return { task, x };
  };
  const collect = async (it: AsyncIterable<OutputChunk>): Promise<OutputChunk[]> => {
    const out: OutputChunk[] = [];
    for await (const c of it) out.push(c);
    return out;
  };
  const joined = (cs: readonly OutputChunk[]): string => cs.map((c) => text(c.data)).join('');

  add('commit returns once the task has started; wait answers its result, also when called after the end', async (l) => {
    const img = await image(l);
    const { task } = await start(l, img, sh('echo out; sleep 0.5; echo err >&2; exit 3'));
    const st = await ok(l.tasks.status(task));
    assert.equal(st.state, 'running', 'the commit returned while the task runs');
    const r = await ok(l.tasks.wait(task));
    const check = (x: TaskResult): void => {
      assert.equal(x.exitCode, 3);
      assert.equal(x.reason, 'exited');
      assert.equal(x.state, 'exited');
      assert.equal(text(x.stdout), 'out\n');
      assert.equal(text(x.stderr), 'err\n');
      assert.deepEqual(
        x.output.map((c) => `${c.stream}:${text(c.data)}`),
        ['stdout:out\n', 'stderr:err\n'],
      );
      assert.ok(x.startedAt !== null && x.endedAt !== null && x.startedAt <= x.endedAt);
    };
    check(r);
    check(await ok(l.tasks.wait(task)));
    const after = await ok(l.tasks.status(task));
    assert.deepEqual([after.state, after.exitCode, after.outputBytes, after.truncated], ['exited', 3, 8, false]);
  });

  add('the task is unbound exactly once, with its exit code and reason; its executor moves on', async (l) => {
    const img = await image(l);
    const { result: started, events } = await recording(l.events, async () => {
      const s = await start(l, img, sh('exit 4'));
      await ok(l.tasks.wait(s.task));
      await new Promise((r) => setTimeout(r, 200));
      return s;
    });
    const mine = events.filter((e: LesslEvent) => e.id.key === started.task && (e.type === 'bound' || e.type === 'unbound'));
    assert.deepEqual(
      mine.map((e) => e.type),
      ['bound', 'unbound'],
    );
    assert.equal(mine[1]?.detail.exitCode, 4);
    assert.equal(mine[1]?.detail.reason, 'exited');
    const snap = await ok(l.composer.handle(started.x));
    assert.equal(snap.members.find((m) => m.id.key === started.task)?.state, 'unbound');
  });

  add('logs: from a byte offset, and live with follow until the task ends', async (l) => {
    const img = await image(l);
    const { task } = await start(l, img, sh('echo one; sleep 0.6; echo two'));
    const live: { text: string; state: string }[] = [];
    for await (const c of l.tasks.logs(task, { follow: true })) {
      const st = await ok(l.tasks.status(task));
      live.push({ text: text(c.data), state: st.state });
    }
    assert.equal(live.map((x) => x.text).join(''), 'one\ntwo\n');
    assert.equal(live[0]?.state, 'running', 'the first chunk arrived while the task ran');
    assert.equal((await ok(l.tasks.status(task))).state, 'exited');
    assert.equal(joined(await collect(l.tasks.logs(task, { since: 4 }))), 'two\n');
    assert.equal(joined(await collect(l.tasks.logs(task, { since: 2 }))), 'e\ntwo\n');
    assert.equal(joined(await collect(l.tasks.logs(task, { since: 100 }))), '');
  });

  add('kill ends a running task: state killed, reason killed, one unbound, wait resolves', async (l) => {
    const img = await image(l);
    const { task } = await start(l, img, sh('echo started; sleep 30'));
    const waiting = l.tasks.wait(task)();
    const { result: st, events } = await recording(l.events, () => ok(l.tasks.kill(task, { signal: 'KILL' })));
    assert.equal(st.state, 'killed');
    assert.equal(st.reason, 'killed');
    const r = await waiting;
    assert.ok(r._tag === 'Right', JSON.stringify(r));
    if (r._tag === 'Right') assert.equal(r.right.reason, 'killed');
    assert.equal(events.filter((e) => e.id.key === task && e.type === 'unbound').length, 1);
    // killing an ended task changes nothing
    const again = await ok(l.tasks.kill(task));
    assert.equal(again.state, 'killed');
  });

  add('a task past its deadline is killed with reason deadline', async (l) => {
    const img = await image(l);
    const { task } = await start(l, img, sh('sleep 30', { limits: { deadlineMs: 300 } }));
    const r = await ok(l.tasks.wait(task));
    assert.equal(r.reason, 'deadline');
    assert.equal(r.state, 'killed');
  });

  add('output is capped at the task limit and marked truncated', async (l) => {
    const img = await image(l);
    const { task } = await start(l, img, sh('echo 0123456789', { limits: { outputBytes: 4 } }));
    const r = await ok(l.tasks.wait(task));
    assert.equal(text(r.stdout), '0123');
    assert.equal(r.truncated, true);
  });

  add('abort: an aborted signal answers Aborted at once and does nothing; aborting a wait leaves the task running', async (l) => {
    const img = await image(l);
    const gone = AbortSignal.abort('caller gave up');
    await fails(l.tasks.wait('task://local/whatever', { signal: gone }), 'Aborted');
    const h = await ok(l.composer.handle(`executor://local/${uniq('x')}`));
    await fails(l.composer.commit(await ok(l.composer.join(h, img)), { signal: gone }), 'Aborted');
    const r = await l.composer.handle(h.executor)();
    assert.ok(r._tag === 'Right' && r.right.revision === 0, 'nothing was committed');
    await fails(l.run({ image: img, spec: sh('echo x'), signal: gone }), 'Aborted');
    const { task } = await start(l, img, sh('sleep 30'));
    await fails(l.tasks.wait(task, { signal: AbortSignal.timeout(200) }), 'Aborted');
    assert.equal((await ok(l.tasks.status(task))).state, 'running');
    await ok(l.tasks.kill(task, { signal: 'KILL' }));
  });

  add('run(): one call runs a task to its end and leaves no task or executor behind', async (l) => {
    const img = await image(l);
    const before = (await ok(l.stores.executor.list())).length + (await ok(l.stores.task.list())).length;
    const r = await ok(l.run({ image: img, spec: sh('echo out; echo err >&2; exit 3') }));
    assert.deepEqual([r.exitCode, text(r.stdout), text(r.stderr), r.state], [3, 'out\n', 'err\n', 'exited']);
    const after = (await ok(l.stores.executor.list())).length + (await ok(l.stores.task.list())).length;
    assert.equal(after, before);
    await fails(l.run({ image: img, spec: { cmd: [] } }), 'InvalidEntry');
    await fails(l.run({ image: 'image://local/nope', spec: sh('true') }), 'NotFound');
    assert.equal((await ok(l.stores.executor.list())).length + (await ok(l.stores.task.list())).length, before);
  });

  add('run(): aborting kills the task, answers Aborted and leaves nothing behind', async (l) => {
    const img = await image(l);
    const ac = new AbortController();
    setTimeout(() => ac.abort('enough'), 300);
    const e = await fails(l.run({ image: img, spec: sh('sleep 30'), signal: ac.signal }), 'Aborted');
    assert.match(e.message, /enough/);
    assert.equal((await ok(l.stores.executor.list())).length, 0);
    assert.equal((await ok(l.stores.task.list())).length, 0);
  });

  add('concurrent runs from one image overlap in time (no lock is held while a task runs)', async (l) => {
    const img = await image(l);
    const rs = await Promise.all(Array.from({ length: 6 }, (_, i) => ok(l.run({ image: img, spec: sh(`sleep 1; echo ${i}`) }))));
    rs.forEach((r, i) => assert.equal(text(r.stdout), `${i}\n`));
    const lastStart =
      rs
        .map((r) => r.startedAt ?? '')
        .sort()
        .at(-1) ?? '';
    const firstEnd = rs.map((r) => r.endedAt ?? '').sort()[0] ?? '';
    assert.ok(lastStart < firstEnd, `every run started before the first one ended (${lastStart} < ${firstEnd})`);
  });

  add('a task bound again runs again: a new run, with only its own output', async (l) => {
    const img = await image(l);
    const { task, x } = await start(l, img, sh('echo run'));
    await ok(l.tasks.wait(task));
    let h = await ok(l.composer.handle(x));
    h = await ok(l.composer.bind(h, task));
    assert.ok((await ok(l.composer.commit(h))).committed);
    const r = await ok(l.tasks.wait(task));
    assert.equal(text(r.stdout), 'run\n');
    assert.equal((await ok(l.tasks.status(task))).run, 2);
  });

  add('a task already running elsewhere cannot be bound again: InUse', async (l) => {
    const img = await image(l);
    const { task } = await start(l, img, sh('sleep 30'));
    let h = await ok(l.composer.handle(`executor://local/${uniq('x')}`));
    h = await ok(l.composer.bind(await ok(l.composer.join(await ok(l.composer.join(h, img)), task)), task));
    await fails(l.composer.commit(h), 'InUse');
    await ok(l.tasks.kill(task, { signal: 'KILL' }));
  });

  add('wait, logs, kill and status of an unknown task are NotFound; bad options are InvalidEntry', async (l) => {
    const id = `task://local/${uniq('none')}`;
    await fails(l.tasks.wait(id), 'NotFound');
    await fails(l.tasks.kill(id), 'NotFound');
    await fails(l.tasks.status(id), 'NotFound');
    await assert.rejects(collect(l.tasks.logs(id)), (e: { tag?: string }) => e.tag === 'NotFound');
    await assert.rejects(collect(l.tasks.logs(id, { since: -1 })), (e: { tag?: string }) => e.tag === 'InvalidEntry');
    await fails(l.tasks.kill(id, { signal: illTyped('HUP') }), 'InvalidEntry');
    await fails(l.tasks.wait('not an id'), 'InvalidEntry');
    const never = `task://local/${uniq('never')}`;
    await ok(l.stores.task.create({ id: never, spec: sh('true') }));
    assert.equal((await ok(l.tasks.status(never))).state, 'created');
  });

  add('a refused principal gets PermissionDenied whether or not the task exists', async () => {
    const l = await o.factory({ stores: STORES, authorize: (p) => p !== 'mallory' });
    try {
      const id = `task://local/${uniq('mine')}`;
      await ok(l.stores.task.create({ id, spec: sh('true') }));
      for (const t of [id, `task://local/${uniq('none')}`]) {
        await fails(l.tasks.wait(t, { principal: 'mallory' }), 'PermissionDenied');
        await fails(l.tasks.kill(t, { principal: 'mallory' }), 'PermissionDenied');
        await fails(l.tasks.status(t, { principal: 'mallory' }), 'PermissionDenied');
        await assert.rejects(
          collect(l.tasks.logs(t, { principal: 'mallory' })),
          (e: { tag?: string }) => e.tag === 'PermissionDenied',
        );
      }
    } finally {
      await l.close();
    }
  });

  if (o.fixtures?.tempDir !== undefined) {
    const tempDir = o.fixtures.tempDir;
    add(
      'results and output survive a reopen',
      async () => {
        const location = tempDir();
        const a = await o.factory({ stores: STORES, location });
        let task: string;
        try {
          const img = await image(a);
          task = (await start(a, img, sh('echo kept; exit 5'))).task;
          await ok(a.tasks.wait(task));
        } finally {
          await a.close();
        }
        const b = await o.factory({ stores: STORES, location });
        try {
          const r = await ok(b.tasks.wait(task));
          assert.deepEqual([r.exitCode, text(r.stdout), r.state], [5, 'kept\n', 'exited']);
          assert.equal(joined(await collect(b.tasks.logs(task))), 'kept\n');
          let unbound = 0;
          for await (const e of b.events.stream({ ids: [task] }, { since: 0 })) {
            if (e.type === 'unbound') unbound++;
            if (e.seq >= b.events.lastSeq()) break;
          }
          assert.equal(unbound, 1);
        } finally {
          await b.close();
        }
      },
      'reopen',
    );
  }
  return cases;
};
