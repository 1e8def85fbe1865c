/**
 * The commit kit shared by the container and Swarm executor drivers, on a fake main process (no
 * Docker): step order, the unbind of the main task, rollback in reverse on a failing step, faults
 * and aborts, storage refused while running, and retire only after a commit that succeeded.
 */
import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, test } from 'vitest';
import { invalidEntry, type Member } from '@lessl/core';
import { idOfKey, type CommitPlan, type PlanStep } from '@lessl/level';
import { commitPlan, type MainSteps } from '../src/commit-kit.js';

const X = 'executor://local/x';
const T1 = 'task://local/t1';
const T2 = 'task://local/t2';
const V = 'volume://local/v';

const member = (key: string): Member => ({ id: idOfKey(key), readOnly: false, state: 'bound' });
const step = (op: PlanStep['op'], key: string): PlanStep => ({ op, id: key, member: member(key) });

/** A plan of `steps`; `log` records the runtime's calls. */
const planOf = (steps: PlanStep[], log: string[], signal?: AbortSignal): CommitPlan => ({
  executor: idOfKey(X),
  exists: true,
  options: {},
  attributes: {},
  before: [],
  after: [],
  steps,
  elements: new Map(),
  runs: {
    open: (task: string) => {
      throw new Error(`the fake main process opens no run (${task})`);
    },
    stop: async (task: string) => void log.push(`stop run ${task}`),
  },
  ...(signal === undefined ? {} : { signal }),
});

/** A fake main process: `main` is the running main task's process ID; `failBind` makes that bind fail. */
const fakeMain = (log: string[], main: { task: string; id: string } | null, failBind?: string): MainSteps => {
  let current = main;
  let n = 0;
  return {
    graceSeconds: 3,
    storageFixed: 'the fake cannot',
    running: () => current !== null,
    mainOf: (task) => (current?.task === task ? current.id : null),
    async stopMain(id) {
      log.push(`stop main ${id}`);
      current = null;
      return 7;
    },
    async bind(s, undo) {
      if (s.id === failBind) return E.left(invalidEntry('no', s.id, ['spec.cmd']));
      const id = `p${++n}`;
      log.push(`start ${id} for ${s.id}`);
      current = { task: s.id, id };
      undo.push(async () => void log.push(`undo ${id}`));
      return E.right(undefined);
    },
    describe: () => ({ main: current?.id ?? null }),
    remove: async (id) => void log.push(`remove ${id}`),
  };
};

describe('commit kit', () => {
  test('steps in order; the main task unbound is stopped and retired once the registry has the commit', async () => {
    const log: string[] = [];
    const r = await commitPlan(
      planOf([step('unbind', T1), step('bind', T2)], log),
      undefined,
      fakeMain(log, { task: T1, id: 'p0' }),
    );
    expect(E.isRight(r)).toBe(true);
    if (E.isLeft(r)) return;
    expect(r.right.results.map((x) => [x.op, x.status, x.task?.exitCode])).toEqual([
      ['unbind', 'SUCCESS', 7],
      ['bind', 'SUCCESS', undefined],
    ]);
    expect(r.right.attributes).toEqual({ main: 'p1' });
    expect(log).toEqual([`stop run ${T1}`, 'stop main p0', `start p1 for ${T2}`]);
    await r.right.retire?.();
    expect(log.at(-1)).toBe('remove p0');
  });

  test('a failing step rolls back the earlier ones in reverse; nothing is retired', async () => {
    const log: string[] = [];
    const main = fakeMain(log, null, T2);
    const plan = planOf([step('bind', T1), step('unbind', T1), step('bind', V), step('bind', T2)], log);
    const r = await commitPlan(plan, undefined, main);
    expect(E.isLeft(r)).toBe(true);
    if (E.isRight(r)) return;
    expect(r.left.error._tag).toBe('InvalidEntry');
    expect(r.left.results.map((x) => x.status)).toEqual(['SUCCESS', 'SUCCESS', 'SUCCESS', 'ERROR']);
    expect(log.filter((l) => l.startsWith('undo') || l.startsWith('remove'))).toEqual(['undo p1']);
  });

  test('a fault, an abort and a throwing step fail their step; storage changes are refused while running', async () => {
    const log: string[] = [];
    const fault = await commitPlan(planOf([step('bind', T1)], log), (s) => invalidEntry('fault', s.id, []), fakeMain(log, null));
    expect(E.isLeft(fault) && fault.left.error.message).toBe('fault');
    const ac = new AbortController();
    ac.abort(new Error('stop'));
    const stopped = await commitPlan(planOf([step('bind', T1)], log, ac.signal), undefined, fakeMain(log, null));
    expect(E.isLeft(stopped) && stopped.left.error._tag).toBe('Aborted');
    const throwing = { ...fakeMain(log, null), bind: () => Promise.reject(new Error('boom')) };
    const thrown = await commitPlan(planOf([step('bind', T1)], log), undefined, throwing);
    expect(E.isLeft(thrown) && thrown.left.error._tag).toBe('RuntimeError');
    const join = await commitPlan(planOf([step('join', V)], log), undefined, fakeMain(log, { task: T1, id: 'p0' }));
    expect(E.isLeft(join) && join.left.error._tag).toBe('Unsupported');
    expect(log.filter((l) => l.startsWith('start'))).toEqual([]);
  });
});
