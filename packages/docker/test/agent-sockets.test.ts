// `lessl-agent --sockets PATH` on the host (no engine): node's IPC channel in, connected sockets
// handed back. It enters this process's own network namespace (/proc/self/ns/net: the tests run as
// root, as CI does), so it reaches real HTTP servers on this loopback.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { Socket } from 'node:net';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { AGENT_FILE } from '../src/agent/binary.js';
import { eventually, httpOver } from './support.js';

const BIG = 5 * 1024 * 1024;
const big = Buffer.alloc(BIG);
for (let i = 0; i < BIG; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

let server: Server;
let port: number;

beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.url === '/big') return void res.end(big);
    const h = createHash('sha256');
    req.on('data', (c: Buffer) => h.update(c));
    req.on('end', () => res.end(`${req.method} ${req.url} ${h.digest('hex')}`));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address();
  port = typeof a === 'object' && a !== null ? a.port : 0;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

/** Closes a socket answered (one the test does not use). */
const done = (a: Socket | string): void => void (a instanceof Socket && a.destroy());

/** A forwarder in `netns`, and its answers by id: a socket, or the reason it gave. */
const forwarder = (
  netns = '/proc/self/ns/net',
): { child: ChildProcess; ask: (id: number, p: number) => Promise<Socket | string> } => {
  const child = spawn(AGENT_FILE, ['--sockets', netns], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  const waiting = new Map<number, (a: Socket | string) => void>();
  child.on('message', (m: unknown, handle: unknown) => {
    const [id, why] = Array.isArray(m) ? (m as unknown[]) : [];
    const done = typeof id === 'number' ? waiting.get(id) : undefined;
    done?.(handle instanceof Socket ? handle : String(why));
  });
  const ask = (id: number, p: number): Promise<Socket | string> =>
    new Promise((resolve) => {
      waiting.set(id, resolve);
      child.send([id, p]);
    });
  return { child, ask };
};

/** The process's uid and its network namespace (`net:[inode]`). */
const whoIs = (pid: number): { uid: number; netns: string } => ({
  uid: Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]),
  netns: readlinkSync(`/proc/${pid}/ns/net`),
});

test('each connect hands over a connected, non-blocking socket: HTTP over it, 5 MiB down and up intact (up to a server in this very process: a blocking socket would stall its event loop for good), 40 at once', async () => {
  const { child, ask } = forwarder();
  try {
    const first = await ask(1, port);
    expect(first).toBeInstanceOf(Socket);
    const s = first as Socket;
    expect([s.remoteAddress, s.remotePort]).toEqual(['127.0.0.1', port]);
    expect(sha((await httpOver(s, '/big')).body)).toBe(sha(big));
    const up = await httpOver((await ask(2, port)) as Socket, '/up', big);
    expect(up.body.toString()).toBe(`POST /up ${sha(big)}`);
    const many = await Promise.all(
      Array.from({ length: 40 }, async (_, i) => httpOver((await ask(10 + i, port)) as Socket, `/n${i}`)),
    );
    expect(many.map((m) => m.body.toString().split(' ')[1])).toEqual(Array.from({ length: 40 }, (_, i) => `/n${i}`));
  } finally {
    child.disconnect();
  }
});

test('it enters as nobody: uid 65534, in the namespace it was given', async () => {
  const { child, ask } = forwarder();
  try {
    done(await ask(1, port)); // answered: it entered
    expect(whoIs(child.pid ?? 0)).toEqual({ uid: 65534, netns: whoIs(process.pid).netns });
  } finally {
    child.disconnect();
  }
});

test('nothing listening and a bad port are answered with the reason; the forwarder goes on', async () => {
  const { child, ask } = forwarder();
  try {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const a = closed.address();
    await new Promise<void>((r) => closed.close(() => r()));
    expect(await ask(1, typeof a === 'object' && a !== null ? a.port : 0)).toBe('Connection refused');
    expect(await ask(2, 0)).toBe('bad port');
    expect(await ask(3, 70000)).toBe('bad port');
    const fine = await ask(4, port);
    done(fine);
    expect(fine).toBeInstanceOf(Socket);
  } finally {
    child.disconnect();
  }
});

test('its end: it exits when the channel closes, and the sockets it handed over live on', async () => {
  const { child, ask } = forwarder();
  const s = (await ask(1, port)) as Socket;
  const exited = new Promise<number | null>((r) => child.once('exit', r));
  child.disconnect();
  expect(await exited).toBe(0);
  expect((await httpOver(s, '/after')).body.toString()).toBe(`GET /after ${sha(Buffer.alloc(0))}`);
});

test('a path that is no network namespace: exit 125, the reason on stderr; no IPC channel: exit 2', async () => {
  const { child } = forwarder('/etc/hostname');
  let said = '';
  child.stderr?.on('data', (d: Buffer) => (said += d.toString()));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  expect(code).toBe(125);
  expect(await eventually(() => said.includes('cannot enter the network namespace /etc/hostname: setns'))).toBe(true);
  const bare = spawnSync(AGENT_FILE, ['--sockets', '/proc/self/ns/net'], { encoding: 'utf8' });
  expect([bare.status, bare.stderr]).toEqual([2, 'lessl-agent --sockets: no node IPC channel (NODE_CHANNEL_FD)\n']);
});
