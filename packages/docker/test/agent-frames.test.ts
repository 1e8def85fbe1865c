// The agent's frames, encoded and decoded without Docker.
import fc from 'fast-check';
import { expect, test } from 'vitest';
import { agentCapabilities } from '../src/agent/binary.js';
import { encodeFrame, exitOf, FrameDecoder, MAX_PAYLOAD, runPayload, userFields } from '../src/agent/frames.js';

test('frames decode whole and in order however the stream is cut', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.constantFrom('I', 'K', 'P', 'E', 'R'), fc.nat(), fc.uint8Array({ maxLength: 64 })), { maxLength: 8 }),
      fc.array(fc.integer({ min: 1, max: 20 }), { minLength: 1 }),
      (frames, cuts) => {
        const bytes = Buffer.concat(frames.map(([t, run, d]) => encodeFrame(t, run, d)));
        const dec = new FrameDecoder();
        const got = [];
        for (let off = 0, i = 0; off < bytes.length; i++) {
          const size = cuts[i % cuts.length] ?? 1;
          got.push(...dec.push(bytes.subarray(off, off + size)));
          off += size;
        }
        expect(got.map((f) => [f.type, f.run, new Uint8Array(f.data)])).toEqual(frames.map(([t, r, d]) => [t, r, d]));
      },
    ),
  );
});

test('a frame over the limit is refused (the stream is not the agent’s)', () => {
  const h = Buffer.alloc(9);
  h.write('O', 0, 'latin1');
  h.writeUInt32BE(MAX_PAYLOAD + 1, 5);
  expect(() => new FrameDecoder().push(h)).toThrow(/over/);
});

test('a run payload: NUL-terminated fields; NUL bytes and an empty command refused, naming the field', () => {
  const p = runPayload({ user: 'nobody', group: '', cwd: '/tmp', argv: ['echo', 'hi'], env: ['A=1'] });
  expect(p.ok && p.payload.toString()).toBe('nobody\0\0/tmp\x002\0echo\0hi\x001\0A=1\0');
  expect(runPayload({ user: '', group: '', cwd: '', argv: [], env: [] })).toMatchObject({ ok: false, error: { field: 'cmd' } });
  expect(runPayload({ user: '', group: '', cwd: '', argv: ['x'], env: ['A=\0'] })).toMatchObject({
    ok: false,
    error: { field: 'env' },
  });
  expect(runPayload({ user: '', group: '', cwd: 'a\0', argv: ['x'], env: [] })).toMatchObject({
    ok: false,
    error: { field: 'pwd' },
  });
});

test('exit frames and users', () => {
  const x = Buffer.from([0, 0, 0, 127, 1]);
  expect(exitOf(x)).toEqual({ code: 127, notFound: true });
  expect(exitOf(Buffer.from([0xff, 0xff, 0xff, 0xff]))).toEqual({ code: -1, notFound: false });
  expect(userFields('1000:100')).toEqual({ user: '1000', group: '100' });
  expect(userFields('nobody')).toEqual({ user: 'nobody', group: '' });
  expect(userFields(undefined)).toEqual({ user: '', group: '' });
});

test('the agent gets the capabilities it needs; those the container was not given are dropped for runs', () => {
  expect(agentCapabilities({ CapDrop: ['ALL'] })).toEqual({
    capAdd: ['KILL', 'SETGID', 'SETUID', 'SETPCAP'],
    capDrop: ['ALL'],
    drop: [5, 6, 7, 8],
  });
  expect(agentCapabilities({ CapDrop: ['ALL'], CapAdd: ['CAP_KILL', 'NET_ADMIN'] })).toEqual({
    capAdd: ['CAP_KILL', 'NET_ADMIN', 'SETGID', 'SETUID', 'SETPCAP'],
    capDrop: ['ALL'],
    drop: [6, 7, 8],
  });
  expect(agentCapabilities({ CapDrop: ['CAP_SETUID', 'NET_RAW'] })).toEqual({
    capAdd: ['SETUID'],
    capDrop: ['NET_RAW'],
    drop: [7],
  });
  expect(agentCapabilities({})).toEqual({ capAdd: [], capDrop: [], drop: [] });
  expect(agentCapabilities({ Privileged: true, CapDrop: ['ALL'] })).toEqual({ capAdd: [], capDrop: ['ALL'], drop: [] });
});
