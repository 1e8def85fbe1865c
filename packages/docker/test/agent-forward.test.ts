// The agent's connection frames and the Forwarder on the host (no engine): `lessl-agent --forward`
// run as a local process over pipes, reaching real HTTP servers on loopback.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { agentBinary } from '../src/agent/binary.js';
import { CONN_WINDOW, Forwarder } from '../src/agent/forward.js';
import { FrameDecoder } from '../src/agent/frames.js';
import { eventually, httpOver } from './support.js';

const BIN = new URL('../agent/lessl-agent', import.meta.url).pathname;
const BIG = 5 * 1024 * 1024;
/** What the slow route writes: far more than the loopback socket buffers hold. */
const SLOW = 64 * 1024 * 1024;
const big = Buffer.alloc(BIG, 0);
for (let i = 0; i < BIG; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
/** The port a listening server got. */
const portOf = (s: Server): number => {
  const a = s.address();
  return typeof a === 'object' && a !== null ? a.port : 0;
};

let server: Server;
let port: number;
/** Bytes the slow-reader route wrote, and whether its last write was taken whole. */
const slow = { written: 0, full: false };

beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.url === '/big') return void res.end(big);
    if (req.url === '/slow') {
      const more = (): void => {
        for (;;) {
          const ok = res.write(big.subarray(0, 64 * 1024));
          slow.written += 64 * 1024;
          if (slow.written >= SLOW) return void res.end();
          if (!ok) {
            slow.full = true;
            return void res.once('drain', more);
          }
        }
      };
      return more();
    }
    const h = createHash('sha256');
    let n = 0;
    req.on('data', (c: Buffer) => ((n += c.length), h.update(c)));
    req.on('end', () => res.end(`${req.method} ${req.url} ${n} ${h.digest('hex')}`));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = portOf(server);
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

/** A forwarder over a local `lessl-agent --forward`; `d` counts the data bytes the agent sent. */
const forwarder = (): { fwd: Forwarder; agent: ChildProcessWithoutNullStreams; d: { bytes: number } } => {
  const agent = spawn(BIN, ['--forward'], { stdio: 'pipe' });
  const fwd = new Forwarder((frame) => void agent.stdin.write(frame), 'task://local/t');
  const dec = new FrameDecoder();
  const d = { bytes: 0 };
  agent.stdout.on('data', (c: Buffer) => {
    for (const f of dec.push(c)) {
      if (f.type === 'd') d.bytes += f.data.length;
      fwd.dispatch(f);
    }
  });
  agent.stdout.on('end', () => fwd.close('the agent exited'));
  return { fwd, agent, d };
};

const open = async (fwd: Forwarder, p = port): Promise<Duplex> => {
  const c = await fwd.connect(p);
  if (E.isLeft(c)) throw new Error(c.left.message);
  return c.right;
};

test('the agent was built', () => expect(agentBinary()).toBeDefined());

test('HTTP both ways through the forwarder; 5 MiB up and down intact; 300 connections at once', async () => {
  const { fwd, agent } = forwarder();
  const r = await httpOver(await open(fwd), '/x?y=1', Buffer.from('hello'));
  expect(r.body.toString()).toBe(`POST /x?y=1 5 ${sha(Buffer.from('hello'))}`);
  const up = await httpOver(await open(fwd), '/up', big);
  expect(up.body.toString()).toBe(`POST /up ${BIG} ${sha(big)}`);
  const down = await httpOver(await open(fwd), '/big');
  expect(sha(down.body)).toBe(sha(big));
  const many = await Promise.all(Array.from({ length: 300 }, async (_, i) => httpOver(await open(fwd), `/n${i}`)));
  expect(many.map((m) => m.body.toString().split(' ')[1])).toEqual(Array.from({ length: 300 }, (_, i) => `/n${i}`));
  agent.stdin.end();
  await new Promise((r) => agent.once('exit', r));
});

test('nothing listening: Unavailable naming the port; stdin end: it exits, connections end', async () => {
  const { fwd, agent } = forwarder();
  const quiet = createServer();
  await new Promise<void>((r) => quiet.listen(0, '127.0.0.1', r));
  const free = portOf(quiet);
  await new Promise<void>((r) => quiet.close(() => r()));
  const refused = await fwd.connect(free);
  expect(E.isLeft(refused) && refused.left).toMatchObject({ _tag: 'Unavailable' });
  expect(E.isLeft(refused) && refused.left.message).toContain(`port ${free}`);
  const conn = await open(fwd);
  const closed = new Promise((r) => conn.once('close', r));
  conn.on('error', () => undefined);
  agent.stdin.end();
  await closed;
  expect(await fwd.connect(port)).toMatchObject({ left: { _tag: 'Unavailable' } });
});

test('a slow reader: the agent reads no more than the window ahead; then everything arrives intact', async () => {
  const { fwd, agent, d } = forwarder();
  const conn = await open(fwd);
  conn.write('GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n');
  // the server's writes back up once the agent stops reading (the window is full)
  expect(await eventually(() => slow.full)).toBe(true);
  expect(d.bytes).toBeLessThanOrEqual(2 * CONN_WINDOW);
  expect(slow.written).toBeLessThan(SLOW);
  const parts: Buffer[] = [];
  conn.on('data', (c: Buffer) => parts.push(c));
  await new Promise((r) => conn.once('end', r));
  const all = Buffer.concat(parts);
  expect(all.length).toBeGreaterThan(SLOW);
  agent.stdin.end();
});
