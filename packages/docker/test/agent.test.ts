// The in-container agent on its own (no engine): built from source with the host's gcc, run as a
// local process over pipes, the same byte stream it gets from a container's attach stream.
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';

const src = join(import.meta.dirname, '..', 'agent', 'lessl-agent.c');
const bin = join(mkdtempSync(join(tmpdir(), 'lessl-agent-')), 'lessl-agent');

interface Frame {
  readonly type: string;
  readonly run: number;
  readonly data: Buffer;
}

/** A frame as the agent reads it. */
const frame = (type: string, run: number, data: Buffer = Buffer.alloc(0)): Buffer => {
  const h = Buffer.alloc(9);
  h.write(type, 0, 'latin1');
  h.writeUInt32BE(run, 1);
  h.writeUInt32BE(data.length, 5);
  return Buffer.concat([h, data]);
};

/** A run frame: uid, gid, cwd, argv and env as NUL-terminated fields. */
const runFrame = (
  run: number,
  argv: readonly string[],
  env: readonly string[] = ['PATH=/usr/bin:/bin'],
  cwd = '',
  user = '',
  group = '',
): Buffer =>
  frame(
    'R',
    run,
    Buffer.from([user, group, cwd, String(argv.length), ...argv, String(env.length), ...env].map((s) => `${s}\0`).join('')),
  );

class Agent {
  readonly p: ChildProcessWithoutNullStreams;
  private buf = Buffer.alloc(0);
  private readonly frames: Frame[] = [];
  private wake: (() => void) | undefined;
  constructor() {
    this.p = spawn(bin, [], { stdio: 'pipe', env: { PATH: '/usr/bin:/bin', AGENT_OWN: 'from-the-image' } });
    this.p.stdout.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 9 && this.buf.length >= 9 + this.buf.readUInt32BE(5)) {
        const len = this.buf.readUInt32BE(5);
        this.frames.push({
          type: this.buf.toString('latin1', 0, 1),
          run: this.buf.readUInt32BE(1),
          data: this.buf.subarray(9, 9 + len),
        });
        this.buf = this.buf.subarray(9 + len);
      }
      this.wake?.();
    });
  }
  send(b: Buffer): void {
    this.p.stdin.write(b);
  }
  /** The frames of `run` up to and with its exit (or with the first frame of type `last`). */
  async until(run: number, last = 'X'): Promise<Frame[]> {
    for (;;) {
      const i = this.frames.findIndex((f) => f.run === run && f.type === last);
      if (i >= 0) {
        const mine = this.frames.filter((f, j) => f.run === run && j <= i);
        for (const f of mine) this.frames.splice(this.frames.indexOf(f), 1);
        return mine;
      }
      await new Promise<void>((r) => (this.wake = r));
    }
  }
}

const text = (fs: readonly Frame[], type: string): string =>
  Buffer.concat(fs.filter((f) => f.type === type).map((f) => f.data)).toString();
const exitOf = (fs: readonly Frame[]): number => fs.find((f) => f.type === 'X')?.data.readInt32BE(0) ?? -1;
const notFoundMark = (fs: readonly Frame[]): number | undefined => fs.find((f) => f.type === 'X')?.data[4];

let agent: Agent;
beforeAll(() => {
  execFileSync('gcc', ['-static', '-O2', '-Wall', '-Wextra', '-Werror', '-o', bin, src]);
  agent = new Agent();
});
afterAll(() => {
  agent.p.kill();
});

test('runs a command: started, stdout and stderr apart, then its exit code after all its output', async () => {
  agent.send(runFrame(1, ['sh', '-c', 'echo out; echo err >&2; exit 3']));
  const fs = await agent.until(1);
  expect(fs[0]?.type).toBe('S');
  expect(text(fs, 'O')).toBe('out\n');
  expect(text(fs, 'e')).toBe('err\n');
  expect(exitOf(fs)).toBe(3);
});

test('relays stdin to the command and ends it', async () => {
  agent.send(runFrame(2, ['cat']));
  agent.send(frame('I', 2, Buffer.from('hello ')));
  agent.send(frame('I', 2, Buffer.from('agent')));
  agent.send(frame('E', 2));
  const fs = await agent.until(2);
  expect(text(fs, 'O')).toBe('hello agent');
  expect(exitOf(fs)).toBe(0);
});

test('a kill reaches the whole process group; the exit says the signal', async () => {
  agent.send(runFrame(3, ['sh', '-c', 'sleep 30 & sleep 30; echo never']));
  await new Promise((r) => setTimeout(r, 100));
  agent.send(frame('K', 3, Buffer.from([9])));
  const fs = await agent.until(3);
  expect(exitOf(fs)).toBe(128 + 9);
  expect(text(fs, 'O')).toBe('');
});

test('a command that does not exist: 127 and why on stderr; env and cwd are the run’s', async () => {
  agent.send(runFrame(4, ['no-such-command-here']));
  const missing = await agent.until(4);
  expect(exitOf(missing)).toBe(127);
  expect(notFoundMark(missing)).toBe(1);
  expect(missing.map((f) => f.type)).not.toContain('S');
  expect(text(missing, 'e')).toContain('no-such-command-here');
  agent.send(runFrame(5, ['sh', '-c', 'echo "$GREETING" && pwd'], ['PATH=/usr/bin:/bin', 'GREETING=hi'], '/tmp'));
  expect(text(await agent.until(5), 'O')).toBe('hi\n/tmp\n');
});

test('runs interleave: a slow one does not hold a fast one back', async () => {
  agent.send(runFrame(6, ['sh', '-c', 'sleep 1; echo slow']));
  agent.send(runFrame(7, ['echo', 'fast']));
  const fast = await agent.until(7);
  expect(text(fast, 'O')).toBe('fast\n');
  expect(text(await agent.until(6), 'O')).toBe('slow\n');
});

test('a command that exits 127 itself is not marked as not found; a missing cwd is made (as Docker does), one that cannot be is 126', async () => {
  agent.send(runFrame(8, ['sh', '-c', 'exit 127']));
  const own = await agent.until(8);
  expect([exitOf(own), notFoundMark(own)]).toEqual([127, 0]);
  agent.send(runFrame(9, ['true'], ['PATH=/usr/bin:/bin'], '/etc/hostname/not-a-dir'));
  const cd = await agent.until(9);
  expect([exitOf(cd), notFoundMark(cd)]).toEqual([126, 0]);
  expect(text(cd, 'e')).toContain('cd /etc/hostname/not-a-dir');
  const missing = join(mkdtempSync(join(tmpdir(), 'lessl-agent-cwd-')), 'made', 'here');
  agent.send(runFrame(17, ['pwd'], ['PATH=/usr/bin:/bin'], missing));
  expect(text(await agent.until(17), 'O')).toBe(`${missing}\n`);
});

test('users by number or by name (from /etc/passwd and /etc/group), with their HOME; an unknown name is refused', async () => {
  const id = ['sh', '-c', 'echo "$(id -u):$(id -g):$HOME"'];
  agent.send(runFrame(10, id, ['PATH=/usr/bin:/bin'], '', '4321', '765'));
  expect(text(await agent.until(10), 'O')).toBe('4321:765:/\n');
  const nobody = execFileSync('sh', ['-c', 'echo "$(id -u nobody):$(id -g nobody)"']).toString().trim();
  const home = execFileSync('sh', ['-c', 'getent passwd nobody | cut -d: -f6']).toString().trim();
  agent.send(runFrame(11, id, ['PATH=/usr/bin:/bin'], '', 'nobody'));
  expect(text(await agent.until(11), 'O')).toBe(`${nobody}:${home}\n`);
  agent.send(runFrame(12, id, ['PATH=/usr/bin:/bin', 'HOME=/mine'], '', 'nobody', 'root'));
  expect(text(await agent.until(12), 'O')).toBe(`${nobody.split(':')[0]}:0:/mine\n`);
  agent.send(runFrame(13, id, ['PATH=/usr/bin:/bin'], '', 'no-such-user'));
  const unknown = await agent.until(13);
  expect(exitOf(unknown)).toBe(126);
  expect(text(unknown, 'e')).toContain('unable to find user no-such-user');
});

test('the run’s env is set over the agent’s own environment', async () => {
  agent.send(runFrame(14, ['sh', '-c', 'echo "$AGENT_OWN $GREETING"'], ['GREETING=hi']));
  expect(text(await agent.until(14), 'O')).toBe('from-the-image hi\n');
});

test('ping answers with its payload; stdin taken is acknowledged, dropped stdin too', async () => {
  agent.send(frame('P', 99, Buffer.from('x')));
  expect((await agent.until(99, 'P')).at(-1)?.data.toString()).toBe('x');
  agent.send(runFrame(15, ['sh', '-c', 'exec 0<&-; sleep 0.2']));
  await agent.until(15, 'S');
  agent.send(frame('I', 15, Buffer.alloc(100_000)));
  const fs = await agent.until(15);
  const acked = fs.filter((f) => f.type === 'A').reduce((a, f) => a + f.data.readUInt32BE(0), 0);
  expect(acked).toBe(100_000);
  expect(exitOf(fs)).toBe(0);
});

test('a KILL ends a run even when a process that left its group holds its output open', async () => {
  agent.send(runFrame(16, ['sh', '-c', 'setsid sleep 20 & echo started']));
  await agent.until(16, 'O');
  agent.send(frame('K', 16, Buffer.from([9])));
  const fs = await agent.until(16);
  expect(fs.at(-1)?.type).toBe('X');
}, 10_000);
