/**
 * `lessl fn deploy|invoke|ls|rm|logs`: named functions over the functions REST API. `invoke`
 * writes the function's stdout byte for byte and exits with its exit code.
 */
import { readFile } from 'node:fs/promises';
import { buffer } from 'node:stream/consumers';
import { clientProblem, LesslError, type LesslClient } from './client.js';
import { ago, cut, note, table, writeJson, type Io } from './commands.js';
import { functionLogs, invoke, invokeAsync, listFunctions, putFunction, removeFunction, type FunctionBody } from './functions.js';
import { messageOf } from './unknown.js';
import { FunctionParamsC } from '@lessl/service/stack';

/** The flags of `lessl fn deploy`. */
export interface DeployFlags {
  readonly image: string;
  readonly cmd?: string;
  readonly env?: readonly string[];
  readonly pwd?: string;
  readonly user?: string;
  readonly network?: string;
  readonly reuse?: 'per-invocation' | 'per-function';
  readonly concurrency?: number;
  readonly min?: number;
  readonly max?: number;
  readonly idle?: number;
  readonly timeout?: number;
  readonly memory?: string;
  readonly cpus?: number;
  readonly public?: boolean;
  readonly description?: string;
}

const invalid = (detail: string, key: string): LesslError => new LesslError(clientProblem('InvalidEntry', detail, 0, [key]));

const UNITS: Readonly<Record<string, number>> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** A size in bytes: a number, or with a unit k, m, g, t (powers of 1024; `512m`, `1.5g`, `64MiB`). */
export const parseBytes = (s: string): number => {
  const m = /^(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?$/i.exec(s.trim());
  const n = m === null ? NaN : Number(m[1]) * (UNITS[(m[2] ?? '').toLowerCase()] ?? NaN);
  if (!Number.isSafeInteger(Math.round(n)) || n <= 0) throw invalid(`not a size: ${s} (e.g. 536870912, 512m, 1g)`, 'memory');
  return Math.round(n);
};

/** `K=V` pairs as an environment. */
const envOf = (pairs: readonly string[]): Record<string, string> => {
  const env: Record<string, string> = {};
  for (const p of pairs) {
    const i = p.indexOf('=');
    if (i <= 0) throw invalid(`--env takes NAME=VALUE, not ${p}`, 'env');
    env[p.slice(0, i)] = p.slice(i + 1);
  }
  return env;
};

/** The limits the flags set, if any. */
const limitsOf = (f: DeployFlags): FunctionBody['limits'] => {
  const l = {
    ...(f.memory === undefined ? {} : { memory: parseBytes(f.memory) }),
    ...(f.cpus === undefined ? {} : { cpus: f.cpus }),
    ...(f.timeout === undefined ? {} : { timeout: f.timeout }),
  };
  return Object.keys(l).length === 0 ? undefined : l;
};

/** The PUT body the flags describe: exactly one of `--cmd` or an argv after `--`. */
export const deployBody = (argv: readonly string[], f: DeployFlags): FunctionBody => {
  if ((f.cmd === undefined) === (argv.length === 0))
    throw invalid("give the command as --cmd 'shell command' or after -- (argv, no shell), one of the two", 'cmd');
  const limits = limitsOf(f);
  const optional = {
    env: f.env === undefined || f.env.length === 0 ? undefined : envOf(f.env),
    pwd: f.pwd,
    user: f.user,
    network: f.network,
    limits,
    reuse: f.reuse,
    concurrency: f.concurrency,
    min_containers: f.min,
    max_containers: f.max,
    idle_seconds: f.idle,
    public: f.public === true ? true : undefined,
    description: f.description,
  };
  const given = Object.fromEntries(Object.entries(optional).filter(([, v]) => v !== undefined));
  return { image: f.image, ...(f.cmd === undefined ? { argv: [...argv] } : { cmd: f.cmd }), ...given };
};

/** `lessl fn deploy NAME --image IMG (--cmd CMD | -- ARGV...)`: creates or updates the function; prints its name and version. */
export const fnDeploy = async (
  c: LesslClient,
  io: Io,
  name: string,
  argv: readonly string[],
  f: DeployFlags,
): Promise<number> => {
  if (!FunctionParamsC.is({ name }))
    throw invalid(`not a function name: ${name} (lower-case letters, digits, . _ -, at most 64)`, 'name');
  const { view, created } = await putFunction(c, name, deployBody(argv, f));
  if (io.json) writeJson(io, view);
  else io.out.write(`${view.name} version ${view.version}${created ? ' (created)' : ''}\n`);
  return 0;
};

/** Options of `lessl fn invoke`. */
export interface InvokeFlags {
  readonly data?: string;
  readonly file?: string;
  readonly async?: boolean;
  readonly verbose?: boolean;
}

/** True when a stream is a terminal. */
const isTty = (s: NodeJS.ReadableStream): boolean => 'isTTY' in s && s.isTTY === true;

/** The input of an invocation: `--data`, `--file` (`-`: stdin), else stdin when it is not a terminal, else nothing. */
const inputOf = async (io: Io, f: InvokeFlags): Promise<Uint8Array> => {
  if (f.data !== undefined && f.file !== undefined) throw invalid('give --data or --file, not both', 'data');
  if (f.data !== undefined) return new TextEncoder().encode(f.data);
  const stdin = io.stdin ?? process.stdin;
  if (f.file !== undefined && f.file !== '-')
    return readFile(f.file).catch((e: unknown) => {
      throw new LesslError(clientProblem('NotFound', `cannot read ${f.file ?? ''}: ${messageOf(e)}`, 0, ['file']));
    });
  return f.file === '-' || !isTty(stdin) ? new Uint8Array(await buffer(stdin)) : new Uint8Array();
};

/** `lessl fn invoke NAME`: the input goes to the function's stdin, its stdout to ours; answers its exit code (1 when it did not exit by itself). */
export const fnInvoke = async (c: LesslClient, io: Io, name: string, f: InvokeFlags): Promise<number> => {
  const input = await inputOf(io, f);
  if (f.async === true) {
    const { id, job } = await invokeAsync(c, name, input);
    if (io.json) writeJson(io, job);
    else io.out.write(`${id}\n`);
    return 0;
  }
  const r = await invoke(c, name, input);
  io.out.write(r.stdout);
  const summary = `invocation ${r.id} of ${name} version ${r.version ?? '?'}: ${r.reason}${r.exitCode === null ? '' : ` ${r.exitCode}`}`;
  if (f.verbose === true)
    note(
      io,
      `${summary} in ${r.durationMs ?? '?'} ms, ${r.cold ? 'cold' : 'warm'}, ${r.stderrBytes ?? 0} bytes of stderr${r.truncated ? ', output truncated' : ''}`,
    );
  else if (r.reason !== 'exited') note(io, summary);
  if (r.reason !== 'exited' || r.exitCode === null) return 1;
  return r.exitCode >= 0 && r.exitCode < 256 ? r.exitCode : 1;
};

/** `lessl fn ls`: the functions the caller may use. */
export const fnLs = async (c: LesslClient, io: Io): Promise<number> => {
  const fns = await listFunctions(c);
  return table(io, fns, ['NAME', 'OWNER', 'IMAGE', 'REUSE', 'VERSION', 'PUBLIC'], () =>
    fns.map((f) => [
      f.name,
      f.owner ?? '-',
      cut(f.image.replace(/^image:\/\/local\//, ''), 24),
      f.reuse,
      String(f.version),
      String(f.public),
    ]),
  );
};

/** `lessl fn rm NAME...`: removes functions (invocations under way are killed). */
export const fnRm = async (c: LesslClient, io: Io, names: readonly string[]): Promise<number> => {
  for (const n of names) await removeFunction(c, n);
  if (io.json) writeJson(io, { removed: names });
  else for (const n of names) io.out.write(`${n}\n`);
  return 0;
};

/** The last line of a text, for a table cell. */
const lastLine = (s: string): string => s.trimEnd().split('\n').at(-1) ?? '';

/** `lessl fn logs NAME`: its newest invocations (exit codes, durations, the end of their stderr). */
export const fnLogs = async (c: LesslClient, io: Io, name: string): Promise<number> => {
  const inv = await functionLogs(c, name);
  return table(io, { invocations: inv }, ['ID', 'VERSION', 'STARTED', 'MS', 'EXIT', 'REASON', 'START', 'STDERR'], () =>
    inv.map((i) => [
      i.id,
      String(i.version),
      ago(i.started_at),
      String(i.duration_ms),
      i.exit_code === null ? '-' : String(i.exit_code),
      i.reason,
      i.cold ? 'cold' : 'warm',
      cut(lastLine(i.stderr_tail), 40),
    ]),
  );
};
