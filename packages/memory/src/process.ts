/**
 * Fake processes for the memory backend: a task's spec runs as a JavaScript function that writes
 * output, sleeps, and answers an exit code. Embedders plug their own (`openMemoryBackend({ run })`)
 * to unit-test code that reads output, exit codes, deadlines and kills without Docker.
 */
import { createHash } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { TaskSpec } from '@lessl/core';
import { fakeHttpd } from './ports.js';

/** What a fake process gets. */
export interface FakeIO {
  /** Writes to stdout (text is UTF-8 encoded). */
  stdout(data: string | Uint8Array): void;
  /** Writes to stderr. */
  stderr(data: string | Uint8Array): void;
  /** Aborted when the task is killed (TERM or KILL), with the signal name as reason. */
  readonly signal: AbortSignal;
  /** Resolves after `ms`, or at once when the process is killed. */
  sleep(ms: number): Promise<void>;
  /** Files the task's credentials put in its filesystem, by absolute path. */
  readonly files: ReadonlyMap<string, Uint8Array>;
  /**
   * The process's stdin, as chunks (empty when the spec takes no input or none was given). One
   * stream per process: each read goes on where the last stopped.
   */
  readonly stdin: AsyncIterable<Uint8Array>;
  /** Reads what is left of stdin, to its end. */
  readAll(): Promise<Uint8Array>;
  /**
   * Serves TCP `port` (one the spec declares in `ports`): each connection `tasks.connect` opens
   * to it is handed to `accept`, until the process ends.
   */
  listen(port: number, accept: (conn: Duplex) => void): void;
}

/** What a fake process answers: its exit code, or `not-found` for a command that does not exist. */
export type FakeExit = number | { readonly exitCode: number; readonly notFound?: boolean };

/** A fake process: runs `spec` and resolves with how it exited. */
export type FakeProcess = (spec: TaskSpec, io: FakeIO) => Promise<FakeExit>;

/** Splits a command line into words: whitespace separates, single and double quotes group. */
const words = (line: string): string[] => {
  const out: string[] = [];
  const re = /"([^"]*)"|'([^']*)'|(\S+)/g;
  for (let m = re.exec(line); m !== null; m = re.exec(line)) out.push(m[1] ?? m[2] ?? m[3] ?? '');
  return out;
};

/** One simple command; answers its exit code (`undefined`: `exit` was called with that code). */
const simple = async (argv: string[], io: FakeIO, env: Readonly<Record<string, string>>): Promise<FakeExit> => {
  const toErr = argv.at(-1) === '>&2';
  const args = (toErr ? argv.slice(0, -1) : argv).map((a) => a.replace(/\$(\w+)/g, (_, k: string) => env[k] ?? ''));
  const write = toErr ? io.stderr : io.stdout;
  const [cmd, ...rest] = args;
  switch (cmd) {
    case undefined:
    case 'true':
      return 0;
    case 'false':
      return 1;
    case 'echo':
      write(`${rest.join(' ')}\n`);
      return 0;
    case 'cat': {
      if (rest.length === 0) for await (const chunk of io.stdin) write(chunk);
      for (const f of rest) {
        const data = io.files.get(f);
        if (data === undefined) {
          io.stderr(`cat: can't open '${f}': No such file or directory\n`);
          return 1;
        }
        write(data);
      }
      return 0;
    }
    case 'wc':
      if (rest.length !== 1 || rest[0] !== '-c') break;
      write(`${(await io.readAll()).byteLength}\n`);
      return 0;
    case 'sha256sum':
      if (rest.length > 0) break;
      write(
        `${createHash('sha256')
          .update(await io.readAll())
          .digest('hex')}  -\n`,
      );
      return 0;
    case 'httpd':
      return fakeHttpd(rest, io);
    case 'sleep':
      await io.sleep(Number(rest[0] ?? 0) * 1000);
      return io.signal.aborted ? (io.signal.reason === 'KILL' ? 137 : 143) : 0;
  }
  io.stderr(`sh: ${cmd}: not found\n`);
  return { exitCode: 127, notFound: true };
};

/**
 * The default fake process: a tiny shell. It runs `echo`, `cat FILE` (credential files), `cat`
 * (stdin to stdout), `wc -c` (counts stdin), `sha256sum` (of stdin), `sleep N`, `true`, `false`, `exit N`,
 * `httpd -p PORT` (a fake HTTP server, see `fakeHttpd`), `$NAME` from the spec's env and `>&2`, either as the command itself or inside `sh -c "a; b"`.
 * Anything else exits 127 (not found). A killed process exits 143 (TERM) or 137 (KILL).
 */
export const tinyShell: FakeProcess = async (spec, io) => {
  const env = spec.env ?? {};
  const [first, second, script] = spec.cmd;
  const lines = first === 'sh' && second === '-c' && script !== undefined ? script.split(/;|\n/) : [spec.cmd.join(' ')];
  const argvs = first === 'sh' && second === '-c' ? lines.map(words) : [[...spec.cmd]];
  let code: FakeExit = 0;
  for (const argv of argvs) {
    if (io.signal.aborted) return io.signal.reason === 'KILL' ? 137 : 143;
    if (argv[0] === 'exit') return Number(argv[1] ?? 0);
    code = await simple(argv, io, env);
    if (typeof code === 'object') return code;
  }
  return code;
};
