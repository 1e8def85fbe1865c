/**
 * deploy/: the systemd unit passes `systemd-analyze verify`, keeps the promises docs/deploy.md
 * makes of it, and the example env file's flags start `lessl serve`. systemd-analyze checks that
 * ExecStart's binary exists and is executable: when /usr/local/bin/lessl does not, the unit is
 * verified as a copy whose ExecStart is a wrapper script running the built CLI
 * (packages/cli/dist/bin.js), everything else unchanged.
 */
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect, test } from 'vitest';
import { root } from './snippets.js';

const run = promisify(execFile);
const BIN = join(root, 'packages', 'cli', 'dist', 'bin.js');
const UNIT = readFileSync(join(root, 'deploy', 'lessl.service'), 'utf8');
const ENV = readFileSync(join(root, 'deploy', 'lessl.env.example'), 'utf8');

/** `systemd-analyze verify` of `unit` (text) as `lessl.service`, ExecStart runnable here; answers its status and stderr. */
const verify = async (unit: string): Promise<{ code: number; stderr: string }> => {
  const dir = mkdtempSync(join(tmpdir(), 'lessl-unit-'));
  let text = unit;
  if (!existsSync('/usr/local/bin/lessl')) {
    const wrapper = join(dir, 'lessl');
    writeFileSync(wrapper, `#!/bin/sh\nexec ${process.execPath} ${BIN} "$@"\n`);
    chmodSync(wrapper, 0o755);
    text = unit.replaceAll('/usr/local/bin/lessl', wrapper);
  }
  writeFileSync(join(dir, 'lessl.service'), text);
  return run('systemd-analyze', ['verify', join(dir, 'lessl.service')]).then(
    (r) => ({ code: 0, stderr: r.stderr }),
    (e: { code?: number; stderr?: string }) => ({ code: e.code ?? 1, stderr: e.stderr ?? '' }),
  );
};

/** The values of `key=` in the unit's lines. */
const values = (key: string): string[] =>
  UNIT.split('\n')
    .filter((l) => l.startsWith(`${key}=`))
    .map((l) => l.slice(key.length + 1));

test('deploy/lessl.service passes systemd-analyze verify with no warning about it', async () => {
  const r = await verify(UNIT);
  expect(r.stderr.split('\n').filter((l) => /lessl/.test(l))).toEqual([]);
  expect(r.code).toBe(0);
});

test('systemd-analyze verify does judge the unit: a bad setting in a copy is reported', async () => {
  const r = await verify(UNIT.replace('Restart=on-failure', 'Restart=sometimes'));
  expect(r.stderr).toMatch(/lessl\.service:\d+: .*restart.*sometimes/i);
});

test('the unit runs lessl serve on its state directory, as lessl in docker, after the engine, stopping after the service’s own bound', () => {
  expect(values('ExecStart')).toEqual(['/usr/local/bin/lessl serve --data ${STATE_DIRECTORY} $LESSL_FLAGS']);
  expect(values('StateDirectory')).toEqual(['lessl']);
  expect(values('EnvironmentFile')).toEqual(['/etc/lessl/lessl.env']);
  expect([values('User'), values('SupplementaryGroups'), values('DynamicUser')]).toEqual([['lessl'], ['docker'], []]);
  expect(values('After')[0]).toMatch(/docker\.service/);
  expect(values('Requires')).toEqual(['docker.service']);
  expect(values('Restart')).toEqual(['on-failure']);
  expect(Number(values('TimeoutStopSec')[0])).toBeGreaterThan(10); // lessl serve's SHUTDOWN_MS is 10 s
  for (const k of ['NoNewPrivileges', 'ProtectHome', 'PrivateTmp']) expect(values(k), k).toEqual(['yes']);
  expect(values('ProtectSystem')).toEqual(['strict']);
});

test("the example env file's flags start lessl serve (printing its URL)", async () => {
  const flags = /^LESSL_FLAGS=(.*)$/m.exec(ENV)?.[1] ?? '';
  expect(flags).toMatch(/--port/);
  // --memory and a free port: the example's flags parse and start the service, the last --port wins
  const child = execFile(process.execPath, [BIN, '--json', 'serve', '--memory', ...flags.split(' '), '--port', '0']);
  const line = await new Promise<string>((resolve) => child.stdout?.once('data', (d: Buffer | string) => resolve(String(d))));
  expect(JSON.parse(line)).toMatchObject({ url: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/) });
  const exited = new Promise((resolve) => child.on('close', resolve));
  child.kill('SIGTERM');
  expect(await exited).toBe(0);
});
