/**
 * `lessl users show` and `lessl users set-quota` (the real binary against a real service on
 * loopback, memory backend): the quotas in force and who set them, a change that the service
 * then enforces (429 through `lessl run`), `default` and `--reset` back to the operator's, bad
 * values refused before any request.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { start, type Harness } from './harness.js';

type Json = Record<string, unknown>;

let h: Harness;
beforeAll(async () => {
  h = await start({ policy: { quotas: { runningTasks: 10 } } });
});
afterAll(async () => {
  await h.close();
});

/** The row of a quota in `users show`'s table. */
const row = (stdout: string, quota: string): string[] =>
  (stdout.split('\n').find((l) => l.startsWith(`${quota} `)) ?? '').trim().split(/\s{2,}/);

describe('users show and set-quota', () => {
  test('show prints each quota, its limit, the usage and who set it; --json the view', async () => {
    const r = await h.run(['users', 'show', 'ann'], { user: 'admin' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split('\n')[0]).toMatch(/^QUOTA\s+LIMIT\s+USAGE\s+SET BY$/);
    expect(row(r.stdout, 'runningTasks')).toEqual(['runningTasks', '10', '0', 'operator']);
    expect(row(r.stdout, 'imageBytes')).toEqual(['imageBytes', '20 GiB', '0 B', 'operator']);
    expect(row(r.stdout, 'requestsPerSecond')).toEqual(['requestsPerSecond', '50', '-', 'operator']);
    const j = JSON.parse((await h.run(['--json', 'users', 'show', 'ann'])).stdout) as Json;
    expect(j).toMatchObject({ name: 'ann', quotas: { runningTasks: 10, burst: 100 }, own: {}, usage: { runningTasks: 0 } });
    // another user's is not found; a user sees their own
    const bobs = await h.run(['users', 'show', 'ann'], { user: 'bob' });
    expect(bobs.code).toBe(1);
    expect(bobs.stderr).toMatch(/^lessl: NotFound: /);
  });

  test('set-quota sets the user’s own values, which the service enforces; default and --reset go back', async () => {
    const set = await h.run(['users', 'set-quota', 'ann', '--running-tasks', '0', '--image-bytes', '1g', '--burst', '300'], {
      user: 'admin',
    });
    expect(set.code, set.stderr).toBe(0);
    expect(row(set.stdout, 'runningTasks')).toEqual(['runningTasks', '0', '0', 'user']);
    expect(row(set.stdout, 'imageBytes')).toEqual(['imageBytes', '1.0 GiB', '0 B', 'user']);
    expect(row(set.stdout, 'queuedJobs')).toEqual(['queuedJobs', '256', '0', 'operator']);
    const run = await h.run(['run', '-'], { input: JSON.stringify({ image: 'busybox', cmd: ['true'] }) });
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^lessl: Unavailable: quota runningTasks exceeded/);
    const back = await h.run(['--json', 'users', 'set-quota', 'ann', '--running-tasks', 'default'], { user: 'admin' });
    expect(JSON.parse(back.stdout)).toMatchObject({ quotas: { runningTasks: 10 }, own: { imageBytes: 1024 ** 3, burst: 300 } });
    const reset = await h.run(['--json', 'users', 'set-quota', 'ann', '--reset', '--queued-jobs', '7'], { user: 'admin' });
    expect(JSON.parse(reset.stdout)).toMatchObject({ quotas: { queuedJobs: 7, burst: 100 }, own: { queuedJobs: 7 } });
    const all = await h.run(['--json', 'users', 'set-quota', 'ann', '--reset'], { user: 'admin' });
    expect(JSON.parse(all.stdout)).toMatchObject({ own: {} });
  });

  test('bad values and no quota named are refused (InvalidEntry, exit 1); only admins set quotas', async () => {
    for (const args of [['--running-tasks', '-1'], ['--image-bytes', 'lots'], ['--requests-per-second', '0'], []]) {
      const r = await h.run(['users', 'set-quota', 'bob', ...args], { user: 'admin' });
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toMatch(/^lessl: InvalidEntry: /);
    }
    const burst = await h.run(['users', 'set-quota', 'bob', '--burst', '0'], { user: 'admin' });
    expect(burst.stderr).toMatch(/^lessl: InvalidEntry: .*burst/);
    const notAdmin = await h.run(['users', 'set-quota', 'bob', '--burst', '5'], { user: 'ann' });
    expect(notAdmin.stderr).toMatch(/^lessl: PermissionDenied: /);
    expect(JSON.parse((await h.run(['--json', 'users', 'show', 'bob'], { user: 'admin' })).stdout)).toMatchObject({ own: {} });
  });
});
