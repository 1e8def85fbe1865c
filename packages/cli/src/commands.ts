/**
 * The CLI's commands: small functions over `LesslClient`. Each writes its human output, or with
 * `json` one JSON document (or JSON lines for streams) to `out`, and answers the exit status.
 */
import { readFile } from 'node:fs/promises';
import { buffer, text } from 'node:stream/consumers';
import ora, { type Ora } from 'ora';
import { field, messageOf } from './unknown.js';
import { clientProblem, LesslError, type JobView, type LesslClient, type Submitted, type TaskView } from './client.js';

/** Where a command writes, and how. */
export interface Io {
  readonly out: NodeJS.WritableStream;
  readonly err: NodeJS.WritableStream;
  /** Machine-readable output: JSON on stdout, problem documents on stderr. */
  readonly json: boolean;
  /** Show a progress display on `err` (only when it is a terminal and not `json`). */
  readonly progress: boolean;
  /** Standard input (for `lessl run -`). */
  readonly stdin?: NodeJS.ReadableStream;
}

/** Writes one JSON document (a line) to stdout. */
export const writeJson = (io: Io, v: unknown): void => void io.out.write(`${JSON.stringify(v)}\n`);
/** Writes `lessl: line` to stderr. */
export const note = (io: Io, line: string): void => void io.err.write(`lessl: ${line}\n`);

/** Reads a task spec from a file, or standard input for `-`; a file that is not JSON is an InvalidEntry. */
export const readSpec = async (file: string, stdin: NodeJS.ReadableStream = process.stdin): Promise<unknown> => {
  let src: string;
  try {
    src = file === '-' ? await text(stdin) : await readFile(file, 'utf8');
  } catch (e) {
    throw new LesslError(clientProblem('NotFound', `cannot read ${file}: ${messageOf(e)}`, 0, ['spec']));
  }
  try {
    const spec: unknown = JSON.parse(src);
    return spec;
  } catch (e) {
    throw new LesslError(
      clientProblem('InvalidEntry', `${file === '-' ? 'standard input' : file} is not JSON: ${messageOf(e)}`, 0, ['spec']),
    );
  }
};

/** The exit status of finished tasks: the first non-zero exit code, 1 for a task that ended without one, else 0. */
export const exitStatusOf = (tasks: readonly TaskView[]): number => {
  for (const t of tasks) {
    if (t.exitCode !== null && t.exitCode !== 0) return t.exitCode > 0 && t.exitCode < 256 ? t.exitCode : 1;
    if (t.exitCode === null && !(t.daemon && t.state === 'running')) return 1;
  }
  return 0;
};

/** Throws the error of a job that did not end done. */
const checkJob = (j: JobView): void => {
  if (j.state === 'done') return;
  const e = j.error ?? { tag: 'Aborted', message: `job ${j.id} was ${j.state}` };
  throw new LesslError(clientProblem(e.tag, `job ${j.id} ${j.state}: ${e.message}`));
};

/** Tells on stderr about tasks that did not simply exit. */
const reportTasks = (io: Io, tasks: readonly TaskView[]): void => {
  for (const t of tasks) {
    if (t.state === 'exited' || (t.daemon && t.state === 'running')) continue;
    const reason = t.commands.find((c) => c.reason !== null)?.reason;
    const err = t.error === null ? '' : `: ${t.error.tag}: ${t.error.message}`;
    note(io, `task ${t.id} ${t.state}${reason === undefined ? '' : ` (${reason})`}${err}`);
  }
};

/** True when a stream is a terminal of a known width (a pseudo-terminal may say 0 columns: ora would then redraw forever). */
const hasWidth = (w: NodeJS.WritableStream): boolean => 'columns' in w && typeof w.columns === 'number' && w.columns > 0;

/** A progress display on stderr when it is a terminal, else a no-op. */
export const spinner = (io: Io, textLine: string): Ora | undefined =>
  io.progress && hasWidth(io.err) ? ora({ text: textLine, stream: io.err, discardStdin: false }).start() : undefined;

/** Waits while a job is queued and while its first task loads its image and starts, showing progress. */
const awaitStart = async (c: LesslClient, io: Io, job: JobView, spin: Ora | undefined): Promise<void> => {
  let j = job;
  const first = j.tasks[0];
  for (;;) {
    if (j.state === 'queued') {
      if (spin) spin.text = `queued (job ${j.id})`;
    } else if (j.state !== 'running' || first === undefined) return;
    else {
      const t = await c.task(first);
      if (t.state !== 'queued') return;
      if (spin) spin.text = `starting ${t.image}: loading the image, creating the container (task ${t.id})`;
    }
    await new Promise((r) => setTimeout(r, 100));
    j = await c.job(j.id);
  }
};

/** How long `lessl run` follows a daemon's initial commands before it returns with the task still running (`--detach-after`). */
export const DETACH_MS = 10_000;

/** Options of `lessl run`. */
export interface RunOptions {
  /** A daemon: return after this many ms even when its initial commands still run (default `DETACH_MS`). */
  readonly detachMs?: number;
}

/**
 * `lessl run SPEC`: submits a spec, shows progress while queued and starting, streams the output
 * live; answers the task's exit status. A daemon task's output is streamed until its initial
 * commands end (or `detachMs` passed), then its ID is printed and the task keeps running.
 */
export const run = async (c: LesslClient, io: Io, spec: unknown, o: RunOptions = {}): Promise<number> => {
  // phase 1: submit, and show progress until the first task starts
  const sub = await c.submit(spec);
  if (sub.kind !== 'job') return finishSubmitted(io, sub);
  const spin = spinner(io, `submitted (job ${sub.job.id})`);
  try {
    await awaitStart(c, io, sub.job, spin);
  } finally {
    spin?.stop();
  }
  // phase 2: the output, until the job ends (a daemon's: until its initial commands end, or the detach bound)
  const until = Date.now() + (o.detachMs ?? DETACH_MS);
  let detached = false;
  for (const id of sub.job.tasks) {
    const t = await c.task(id).catch(() => undefined);
    if (t?.daemon === true) detached = !(await attach(c, io, id, sub.job.id, until)) || detached;
    else if (!io.json) for await (const chunk of c.logs(id, { follow: true })) io.out.write(chunk);
  }
  // phase 3: the result
  const j = detached ? await c.job(sub.job.id) : await c.settle(sub.job.id);
  if (!detached || j.state !== 'running') checkJob(j);
  const tasks = await Promise.all(j.tasks.map((id) => c.task(id)));
  if (io.json) writeJson(io, Array.isArray(spec) ? { items: tasks, next: null } : tasks[0]);
  else {
    reportTasks(io, tasks);
    for (const t of tasks)
      if (t.daemon && t.state === 'running') note(io, `daemon task ${t.id} is running: lessl exec ${t.id} -- CMD`);
  }
  return exitStatusOf(tasks);
};

/**
 * Streams a daemon task's output while its job runs, until the job settles or `until` (a time);
 * then prints what arrived and was not printed yet. Answers whether the job settled.
 */
const attach = async (c: LesslClient, io: Io, id: string, job: string, until: number): Promise<boolean> => {
  // phase 1: follow while waiting for the job (the follow of a running daemon never ends by itself)
  const ac = new AbortController();
  let written = 0;
  const follow = (async () => {
    if (io.json) return;
    for await (const chunk of c.logs(id, { follow: true, signal: ac.signal })) {
      io.out.write(chunk);
      written += chunk.byteLength;
    }
  })().catch(() => undefined);
  const timer = setTimeout(() => ac.abort(), Math.max(0, until - Date.now()));
  const settled = await c
    .settle(job, { signal: ac.signal })
    .then(() => true)
    .catch(() => false);
  clearTimeout(timer);
  ac.abort();
  await follow;
  // phase 2: the rest of the output, past what the follow printed
  if (!io.json) await writeFrom(io, c.logs(id), written);
  return settled;
};

/** Writes a stream of chunks to `out`, skipping its first `skip` bytes. */
const writeFrom = async (io: Io, chunks: AsyncIterable<Uint8Array>, skip: number): Promise<void> => {
  let left = skip;
  for await (const chunk of chunks) {
    if (left < chunk.byteLength) io.out.write(chunk.subarray(left));
    left = Math.max(0, left - chunk.byteLength);
  }
};

const finishSubmitted = (io: Io, sub: Submitted): number => {
  const tasks = sub.kind === 'task' ? [sub.task] : sub.kind === 'batch' ? sub.items : [];
  if (io.json) writeJson(io, sub.kind === 'task' ? sub.task : sub);
  else for (const t of tasks) for (const cmd of t.commands) if (cmd.output !== null) io.out.write(cmd.output);
  return exitStatusOf(tasks);
};

/** `lessl exec ID -- CMD...`: runs one more command in a running daemon task; prints its output; answers its exit code. */
export const exec = async (c: LesslClient, io: Io, id: string, cmd: readonly string[]): Promise<number> => {
  if (cmd.length === 0) throw new LesslError(clientProblem('InvalidEntry', 'no command: lessl exec ID -- CMD...', 0, ['cmd']));
  const before = await c.task(id);
  const sub = await c.exec(id, [cmd.join(' ')]);
  if (sub.kind === 'job') checkJob(await c.settle(sub.job.id));
  const after = await c.task(id);
  const added = after.commands.slice(before.commands.length);
  if (io.json) writeJson(io, { id: after.id, state: after.state, commands: added });
  else
    for (const x of added) {
      if (x.output !== null) io.out.write(x.output);
      else if (x.outputBytes > 0) note(io, `output of ${x.outputBytes} bytes not shown: lessl logs ${id}`);
    }
  const failed = added.find((x) => x.exitCode !== 0);
  return failed === undefined ? 0 : failed.exitCode === null ? 1 : failed.exitCode;
};

const pad = (rows: readonly (readonly string[])[]): string => {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return (
    rows
      .map((r) =>
        r
          .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
};

/** Prints `value` as JSON with --json, else as a table of `header` and the `rows` it makes; answers 0. */
export const table = (io: Io, value: unknown, header: readonly string[], rows: () => readonly (readonly string[])[]): number => {
  if (io.json) writeJson(io, value);
  else io.out.write(pad([header, ...rows()]));
  return 0;
};

/** A time as how long ago it was (`12s ago`, `5m ago`, `3h ago`, `2d ago`); `-` for none. */
export const ago = (iso: string | null | undefined, now = Date.now()): string => {
  const t = iso === null || iso === undefined ? NaN : Date.parse(iso);
  if (Number.isNaN(t)) return '-';
  const s = Math.max(0, Math.round((now - t) / 1000));
  const [n, unit] = s < 60 ? [s, 's'] : s < 3600 ? [s / 60, 'm'] : s < 86_400 ? [s / 3600, 'h'] : [s / 86_400, 'd'];
  return `${Math.floor(n)}${unit} ago`;
};

/** Bytes for people: `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB`. */
export const bytes = (n: number | null | undefined): string => {
  if (n === null || n === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  for (; v >= 1024 && i < units.length - 1; i++) v /= 1024;
  return i === 0 ? `${v} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
};

/** A cell cut to `max` characters (its end replaced by an ellipsis). */
export const cut = (s: string, max: number): string => (s.length <= max ? s : `${s.slice(0, max - 1)}…`);

/** An image ID as a short name (`image://local/busybox` -> `busybox`). */
const imageName = (id: string): string => id.replace(/^image:\/\/local\//, '');

/** `lessl ps`: the caller's tasks, newest first, in 80 columns (names and images cut, times relative). */
export const ps = async (c: LesslClient, io: Io, q: { state?: string; name?: string } = {}): Promise<number> => {
  const tasks = await c.allTasks(q);
  return table(io, tasks, ['ID', 'NAME', 'STATE', 'EXIT', 'IMAGE', 'CREATED'], () =>
    tasks.map((t) => [
      t.id,
      cut(t.name ?? '-', 14),
      t.state,
      t.exitCode === null ? '-' : String(t.exitCode),
      cut(imageName(t.image), 14),
      ago(t.created),
    ]),
  );
};

/** `lessl logs [-f] ID`: the task's output (with `follow`, live until it ends); JSON lines `{ data }` with `json`. */
export const logs = async (c: LesslClient, io: Io, id: string, follow: boolean): Promise<number> => {
  const decoder = new TextDecoder();
  for await (const chunk of c.logs(id, { follow })) {
    if (io.json) writeJson(io, { data: decoder.decode(chunk, { stream: true }) });
    else io.out.write(chunk);
  }
  return 0;
};

/** `lessl rm ID...`: kills and removes tasks. */
export const rm = async (c: LesslClient, io: Io, ids: readonly string[]): Promise<number> => {
  for (const id of ids) await c.remove(id);
  if (io.json) writeJson(io, { removed: ids });
  else for (const id of ids) io.out.write(`${id}\n`);
  return 0;
};

/** The element a lessl event as the service sends it (`data` of a `ServiceEvent`) is about, or ''. */
const elementOf = (data: unknown): string => {
  const id = field(data, 'id');
  return typeof id === 'string' ? id : '';
};

/**
 * An element event as a task-level one: a command of a service task started (`bound`) or ended
 * (`unbound`, with its exit code or how it ended), or a task removed (its executor `deleted`).
 * Answers `[task, command, what]`, or undefined for the element events behind it.
 */
export const taskEvent = (type: string, data: unknown): readonly [string, string, string] | undefined => {
  const id = elementOf(data);
  const cmd = /^task:\/\/[^/]+\/(t_[a-z0-9]+)\.(c\d+)$/.exec(id);
  if (cmd !== null && type === 'bound') return [cmd[1] ?? '', cmd[2] ?? '', 'started'];
  if (cmd !== null && type === 'unbound') {
    const detail = field(data, 'detail');
    const [exitCode, reason] = [field(detail, 'exitCode'), field(detail, 'reason')];
    return [
      cmd[1] ?? '',
      cmd[2] ?? '',
      reason === 'exited' || reason === undefined ? `exited ${String(exitCode)}` : String(reason),
    ];
  }
  const ex = /^executor:\/\/[^/]+\/(t_[a-z0-9]+)$/.exec(id);
  if (ex !== null && type === 'deleted') return [ex[1] ?? '', '-', 'removed'];
  return undefined;
};

/**
 * A function's event as a line's fields: `function://NAME`, its version, and what happened
 * (`deployed`, `invoked exited 0 (cold, 12 ms)`, `removed`). Undefined for other events.
 */
export const functionEvent = (type: string, data: unknown): readonly [string, string, string] | undefined => {
  const id = elementOf(data);
  if (!id.startsWith('function://') || !['deployed', 'invoked', 'deleted'].includes(type)) return undefined;
  const detail = field(data, 'detail');
  const version = field(detail, 'version') ?? field(data, 'revision');
  const v = typeof version === 'number' ? `v${version}` : '-';
  if (type !== 'invoked') return [id, v, type === 'deleted' ? 'removed' : type];
  const [reason, code, cold, ms] = ['reason', 'exitCode', 'cold', 'durationMs'].map((k) => field(detail, k));
  const how = reason === 'exited' ? `exited ${String(code)}` : String(reason);
  return [id, v, `invoked ${how} (${cold === true ? 'cold' : 'warm'}, ${String(ms)} ms)`];
};

/**
 * `lessl events [--since ID] [--all]`: the caller's task events as they happen, one line each
 * (`id task command what`, the id opaque and per user); with `all`, every element event (`id type element`). Stops after `count`
 * events when given.
 */
export const events = async (
  c: LesslClient,
  io: Io,
  o: { since?: string; count?: number; all?: boolean; signal?: AbortSignal },
): Promise<number> => {
  let n = 0;
  const ac = new AbortController();
  o.signal?.addEventListener('abort', () => ac.abort(), { once: true });
  if (o.count === 0) return 0;
  for await (const e of c.events({ ...(o.since === undefined ? {} : { since: o.since }), signal: ac.signal })) {
    const task = taskEvent(e.type, e.data) ?? functionEvent(e.type, e.data);
    if (o.all !== true && task === undefined) continue;
    if (io.json) writeJson(io, e);
    else if (task !== undefined && o.all !== true) io.out.write(`${e.id}\t${task.join('\t')}\n`);
    else {
      io.out.write(`${e.id}\t${e.type}\t${elementOf(e.data)}\n`);
    }
    if (o.count !== undefined && ++n >= o.count) {
      ac.abort();
      break;
    }
  }
  return 0;
};

/** `lessl users add NAME [--admin]`: prints the new user's token (shown once). */
export const usersAdd = async (c: LesslClient, io: Io, name: string, admin: boolean): Promise<number> => {
  const u = await c.addUser(name, admin);
  if (io.json) writeJson(io, u);
  else io.out.write(`${u.token}\n`);
  return 0;
};

/** `lessl users ls`: the users (admins only). */
export const usersLs = async (c: LesslClient, io: Io): Promise<number> => {
  const us = await c.users();
  return table(io, us, ['NAME', 'ADMIN', 'CREATED'], () => us.map((u) => [u.name, String(u.admin), u.created]));
};

/** How long `users rm --wait` waits in the request before it polls the job. */
const LEAVE_WAIT_S = 300;

/**
 * `lessl users rm NAME [--wait]`: starts the removal of a user and everything it owns (its tokens
 * are revoked at once) and prints the job ID; with `--wait`, waits for the end and prints what was
 * removed, per kind, and what failed (exit 1 when anything did).
 */
export const usersRm = async (c: LesslClient, io: Io, name: string, wait: boolean): Promise<number> => {
  let j = await c.removeUser(name, wait ? LEAVE_WAIT_S : undefined);
  if (wait && !['done', 'failed', 'cancelled'].includes(j.state)) j = await c.settle(j.id);
  if (io.json) writeJson(io, j);
  else if (!wait) io.out.write(`${j.id}\n`);
  else {
    for (const [kind, ids] of Object.entries(j.leave?.removed ?? {}))
      io.out.write(`removed\t${kind}\t${ids.length}${ids.length > 0 ? `\t${ids.join(',')}` : ''}\n`);
    for (const f of j.leave?.failed ?? []) io.out.write(`failed\t${f.kind}\t${f.id}\t${f.error}\n`);
  }
  return wait && j.state !== 'done' ? 1 : 0;
};

/** `lessl images ls`. */
export const imagesLs = async (c: LesslClient, io: Io): Promise<number> => {
  const list = await c.images();
  return table(io, list, ['NAME', 'STATE', 'OWNER', 'SIZE', 'LAST USED'], () =>
    list.map((i) => [i.name, i.state, i.owner ?? '(public)', bytes(i.size), ago(i.lastUsed)]),
  );
};

/** `lessl images load NAME FILE|-`: uploads an image archive (`docker save`). */
export const imagesLoad = async (c: LesslClient, io: Io, name: string, file: string, isPublic = false): Promise<number> => {
  const tar = file === '-' ? await buffer(io.stdin ?? process.stdin) : await readFile(file);
  const spin = spinner(io, `loading the image ${name}`);
  const v = await c.loadImage(name, tar, isPublic).finally(() => spin?.stop());
  return imageDone(io, v);
};

/** `lessl images pull REF [NAME]`: has the service pull an image from a registry. */
export const imagesPull = async (c: LesslClient, io: Io, ref: string, name?: string, isPublic = false): Promise<number> => {
  const spin = spinner(io, `pulling ${ref}`);
  const v = await c.pullImage(ref, name ?? nameOf(ref), isPublic).finally(() => spin?.stop());
  return imageDone(io, v);
};

/** A name for an image pulled by reference: its last path part without the tag (`127.0.0.1:5000/x/busybox:1` -> `busybox`). */
const nameOf = (ref: string): string =>
  (ref.split('/').pop() ?? ref)
    .replace(/[:@].*$/, '')
    .toLowerCase()
    .replace(/[^a-z0-9._-]/g, '-') || 'image';

const imageDone = (io: Io, v: { name: string }): number => {
  if (io.json) writeJson(io, v);
  else io.out.write(`${v.name}\n`);
  return 0;
};

/** `lessl images refresh NAME`: has the service fetch the image's source again. */
export const imagesRefresh = async (c: LesslClient, io: Io, name: string): Promise<number> => {
  const spin = spinner(io, `refreshing ${name}`);
  const v = await c.refreshImage(name).finally(() => spin?.stop());
  if (io.json) writeJson(io, v);
  else io.out.write(`${v.name} ${v.refresh?.changed === true ? 'changed' : 'unchanged'}\n`);
  return 0;
};

/** A duration: milliseconds, or a number with s, m, h, d (`7d`). */
export const parseDuration = (s: string): number => {
  const m = /^(\d+)(ms|s|m|h|d)?$/.exec(s.trim());
  if (m === null)
    throw new LesslError(clientProblem('InvalidEntry', `not a duration: ${s} (e.g. 90s, 30m, 12h, 7d)`, 0, ['unused-for']));
  const units: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
  return Number(m[1]) * (units[m[2] ?? 'ms'] ?? 1);
};

/** `lessl images purge [--unused-for 7d] [--keep-bytes N] [--dry-run]` (admins). */
export const imagesPurge = async (
  c: LesslClient,
  io: Io,
  o: { unusedFor?: string; keepBytes?: number; dryRun?: boolean },
): Promise<number> => {
  const r = await c.purgeImages({
    ...(o.unusedFor === undefined ? {} : { unusedForMs: parseDuration(o.unusedFor) }),
    ...(o.keepBytes === undefined ? {} : { keepBytes: o.keepBytes }),
    ...(o.dryRun === true ? { dryRun: true } : {}),
  });
  if (io.json) writeJson(io, r);
  else {
    for (const id of r.removed) io.out.write(`${r.dryRun ? 'would remove' : 'removed'} ${id}\n`);
    for (const k of r.inUse) note(io, `kept ${k.id}: ${k.why}`);
    note(io, `${r.dryRun ? 'would free' : 'freed'} ${bytes(r.freedBytes)}`);
  }
  return 0;
};

/** `lessl pool show` (admins). */
export const poolShow = async (c: LesslClient, io: Io): Promise<number> => {
  const p = await c.pool();
  return table(io, p, ['IMAGE', 'PROFILE', 'RUNS WITH', 'READY', 'STARTING', 'HITS', 'MISSES', 'FAILURES'], () =>
    p.profiles.map((x) => [
      x.image,
      x.key,
      x.runsWith ?? 'exec',
      ...[x.ready, x.starting, x.hits, x.misses, x.failures].map(String),
    ]),
  );
};

/** `lessl pool set FILE` (admins): the pool configuration from a JSON file (`{ profiles, memoryCapBytes? }`). */
export const poolSet = async (c: LesslClient, io: Io, file: string): Promise<number> => {
  await c.setPool(await readSpec(file, io.stdin));
  return poolShow(c, io);
};

/** `lessl images rm ID...`. */
export const imagesRm = async (c: LesslClient, io: Io, ids: readonly string[]): Promise<number> => {
  for (const id of ids) await c.removeImage(id);
  if (io.json) writeJson(io, { removed: ids });
  else for (const id of ids) io.out.write(`${id}\n`);
  return 0;
};
