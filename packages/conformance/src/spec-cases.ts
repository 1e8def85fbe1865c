/**
 * Task spec fields and executor options: every field does what it says
 * or the backend refuses it, naming it. Exact executor options (unknown keys are InvalidEntry);
 * `restart` on daemons (and refused on one-shot tasks); `log.destination: 'none'` keeps nothing;
 * `interaction.tty` and `log.destination: 'file'` are Unsupported at commit (input: input-cases.ts); credentials are resolved
 * through the backend's resolver into the task's environment and files, and appear in no element
 * record and no event.
 */
import { text, type CredentialResolver, type LesslEvent } from '@lessl/core';
import { assert, fails, ok, recording, STORES, sh, uniq, newImage } from './harness.js';
import { illTyped } from './hostile.js';
import type { Case, SuiteOptions, TestBackend } from './types.js';

export const specCases = (o: SuiteOptions, data: () => Promise<Uint8Array>): Case[] => {
  const cases: Case[] = [];
  const add = (name: string, fn: (l: TestBackend) => Promise<void>): void => void cases.push({ name: `spec: ${name}`, fn });

  const image = (l: TestBackend): Promise<string> => newImage(l, data);
  /** Creates a task, joins it with the image to a new executor, binds it and commits. */
  const commitTask = async (l: TestBackend, img: string, spec: Record<string, unknown>) => {
    const task = `task://local/${uniq('t')}`;
    await ok(l.stores.task.create({ id: task, spec }), 'create task');
    let h = await ok(l.composer.handle(`executor://local/${uniq('x')}`));
    h = await ok(l.composer.join(h, img));
    h = await ok(l.composer.bind(await ok(l.composer.join(h, task)), task));
    return { task, x: h.executor.key, result: await ok(l.composer.commit(h), 'commit') };
  };
  /** The commit was refused with `Unsupported` naming `field`; the task never ran. */
  const refused = async (l: TestBackend, img: string, spec: Record<string, unknown>, field: string): Promise<void> => {
    const { task, result } = await commitTask(l, img, spec);
    assert.equal(result.committed, false, `${field}: the commit must be refused`);
    if (result.committed) return;
    assert.equal(result.error._tag, 'Unsupported');
    assert.ok(result.error._tag === 'Unsupported' && result.error.feature === field, `names ${field}: ${result.error.message}`);
    assert.ok(result.results.some((r) => r.id.key === task && r.op === 'bind' && r.status === 'ERROR'));
    assert.equal((await ok(l.tasks.status(task))).state, 'created', 'the task never started');
  };

  add('executor options are exact: unknown fields (also in backend) and wrong types are InvalidEntry naming them', async (l) => {
    const x = `executor://local/${uniq('x')}`;
    const e1 = await fails(l.composer.handle(x, illTyped({ memoryBytes: 1 << 20, memory: 5 })), 'InvalidEntry');
    assert.deepEqual([...e1.keys], ['options.memory']);
    const e2 = await fails(l.composer.handle(x, { backend: { noSuchOption: true } }), 'InvalidEntry');
    assert.deepEqual([...e2.keys], ['options.backend.noSuchOption']);
    const e3 = await fails(l.composer.handle(x, illTyped({ network: 5 })), 'InvalidEntry');
    assert.deepEqual([...e3.keys], ['options.network']);
    await fails(l.composer.handle(x, illTyped('fast')), 'InvalidEntry');
    // a forged handle cannot smuggle options past handle(): commit decodes them again
    const h = await ok(l.composer.handle(x, { pids: 64 }));
    assert.deepEqual(h.options, { pids: 64 });
    await fails(l.composer.commit({ ...h, options: illTyped({ pids: 64, privileged: true }) }), 'InvalidEntry');
    await fails(l.run({ image: 'image://local/none', spec: sh('true'), options: illTyped({ cpu: 1 }) }), 'InvalidEntry');
  });

  add('restart: a policy on a one-shot task is InvalidEntry naming restart; never is accepted', async (l) => {
    const e = await fails(
      l.stores.task.create({ id: `task://local/${uniq('t')}`, spec: sh('true', { restart: { policy: 'always' } }) }),
      'InvalidEntry',
    );
    assert.deepEqual([...e.keys], ['restart']);
    await ok(l.stores.task.create({ id: `task://local/${uniq('t')}`, spec: sh('true', { restart: { policy: 'never' } }) }));
  });

  add('restart on-failure with maxRetries: a failing daemon runs 1 + maxRetries times, one run, every output kept', async (l) => {
    const img = await image(l);
    const spec = sh('echo run; exit 3', { daemon: true, restart: { policy: 'on-failure', maxRetries: 2 } });
    const { task, result } = await commitTask(l, img, spec);
    assert.ok(result.committed);
    const { result: r, events } = await recording(l.events, () => ok(l.tasks.wait(task)));
    assert.equal(r.exitCode, 3);
    assert.equal(r.reason, 'exited');
    assert.equal(text(r.stdout), 'run\nrun\nrun\n');
    assert.equal((await ok(l.tasks.status(task))).run, 1, 'restarts are one lessl run');
    assert.ok(events.filter((e: LesslEvent) => e.type === 'unbound' && e.id.key === task).length <= 1);
  });

  add('restart always: the daemon runs again after it exits, until it is killed; one unbound', async (l) => {
    const img = await image(l);
    const spec = sh('echo up; sleep 0.2; exit 0', { daemon: true, restart: { policy: 'always' } });
    const { task } = await commitTask(l, img, spec);
    const { result: r, events } = await recording(l.events, async () => {
      for (let i = 0; i < 100; i++) {
        const chunks = [];
        for await (const c of l.tasks.logs(task)) chunks.push(text(c.data));
        if (chunks.join('').split('up').length > 2) break;
        await new Promise((res) => setTimeout(res, 100));
      }
      assert.equal((await ok(l.tasks.status(task))).state, 'running', 'still running after exiting');
      await ok(l.tasks.kill(task, { signal: 'KILL' }));
      return ok(l.tasks.wait(task));
    });
    assert.ok(text(r.stdout).split('up').length > 2, `ran at least twice: ${text(r.stdout)}`);
    assert.equal(r.reason, 'killed');
    assert.equal(events.filter((e: LesslEvent) => e.type === 'unbound' && e.id.key === task).length, 1);
  });

  add(
    'log destination none: the task runs and its exit code is kept, its output is not (logs empty, not truncated)',
    async (l) => {
      const img = await image(l);
      const { task } = await commitTask(l, img, sh('echo out; echo err >&2; exit 4', { log: { destination: 'none' } }));
      const r = await ok(l.tasks.wait(task));
      assert.deepEqual([r.exitCode, r.stdout.byteLength, r.stderr.byteLength, r.truncated], [4, 0, 0, false]);
      const chunks = [];
      for await (const c of l.tasks.logs(task)) chunks.push(c);
      assert.equal(chunks.length, 0);
      assert.equal((await ok(l.tasks.status(task))).outputBytes, 0);
      const kept = await ok(l.run({ image: img, spec: sh('echo out', { log: { destination: 'buffer' } }) }));
      assert.equal(text(kept.stdout), 'out\n');
    },
  );

  add('interaction tty and log destination file are Unsupported at commit, naming the field', async (l) => {
    const img = await image(l);
    await refused(l, img, sh('true', { interaction: { tty: true } }), 'spec.interaction.tty');
    await refused(l, img, sh('true', { log: { destination: 'file' } }), 'spec.log.destination');
    const r = await ok(l.run({ image: img, spec: sh('echo ok', { interaction: { stdin: false, tty: false } }) }));
    assert.equal(text(r.stdout), 'ok\n');
  });

  add('credentials without a resolver: Unsupported naming spec.credentials at commit', async (l) => {
    const img = await image(l);
    await refused(l, img, sh('true', { credentials: [{ name: 'TOKEN', ref: 'vault:ci' }] }), 'spec.credentials');
  });

  add('credentials: resolved into the task environment and files, never into records or events', async () => {
    const SECRET = `s3cr3t-${uniq('v')}`;
    const FILE = `f1le-${uniq('v')}`;
    const asked: string[] = [];
    const credentials: CredentialResolver = async (ref, ctx) => {
      asked.push(`${ctx.name}=${ref}@${ctx.task.key}`);
      if (ref === 'vault:fail') throw new Error('vault sealed');
      if (ref === 'vault:bad') return illTyped({ env: { TOKEN: SECRET }, value: SECRET });
      return ref === 'vault:file' ? { files: { '/run/secrets/token': FILE } } : { env: { TOKEN: SECRET } };
    };
    const l = await o.factory({ stores: STORES, credentials });
    try {
      const img = await image(l);
      const creds = [
        { name: 'TOKEN', ref: 'vault:env' },
        { name: 'token-file', ref: 'vault:file' },
      ];
      const { result: run, events } = await recording(l.events, async () => {
        const { task, x, result } = await commitTask(l, img, sh('echo $TOKEN; cat /run/secrets/token', { credentials: creds }));
        assert.ok(result.committed);
        const r = await ok(l.tasks.wait(task));
        return { task, x, r };
      });
      assert.equal(text(run.r.stdout), `${SECRET}\n${FILE}`);
      assert.deepEqual(asked, [`TOKEN=vault:env@${run.task}`, `token-file=vault:file@${run.task}`]);
      const records = JSON.stringify([
        await ok(l.stores.task.read(run.task)),
        await ok(l.stores.executor.read(run.x)),
        await ok(l.stores.task.list()),
        await ok(l.stores.executor.list()),
        await ok(l.tasks.status(run.task)),
        events,
      ]);
      for (const secret of [SECRET, FILE]) assert.ok(!records.includes(secret), 'no secret in records, statuses or events');
      // a resolver that throws, or answers the wrong shape, refuses the commit without the secret in the error
      for (const [ref, tag] of [
        ['vault:fail', 'RuntimeError'],
        ['vault:bad', 'InvalidEntry'],
      ] as const) {
        const { result } = await commitTask(l, img, sh('true', { credentials: [{ name: 'A', ref }] }));
        assert.ok(!result.committed && result.error._tag === tag, `${ref}: ${JSON.stringify(result)}`);
        assert.ok(!result.committed && !JSON.stringify(result.error.message).includes(SECRET));
      }
    } finally {
      await l.close();
    }
  });

  return cases;
};
