/**
 * The `lessl` command line (commander): each command is a small function of `commands.ts` over
 * `LesslClient`; failures print the problem (with its lessl tag) and exit non-zero.
 */
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { clientProblem, LesslClient, LesslError, type Problem } from './client.js';
import * as cmd from './commands.js';
import { readSpec, type Io } from './commands.js';
import type { ServeOptions } from './serve.js';
import * as fns from './fn.js';
import { usersSetQuota, usersShow, type QuotaFlags } from './quotas.js';
import * as routes from './routes.js';
import type { DeployFlags, InvokeFlags } from './fn.js';
import { up, type UpOptions } from './up.js';

/** This package's version (from its package.json, next to dist/). */
export const VERSION: string = ((): string => {
  const pkg: unknown = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  return typeof pkg === 'object' && pkg !== null && 'version' in pkg && typeof pkg.version === 'string' ? pkg.version : '0.0.0';
})();

/** Global options every command takes. */
interface Globals {
  readonly url?: string;
  readonly token?: string;
  readonly json?: boolean;
}

const int =
  (what: string, min = 0) =>
  (v: string): number => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${what} must be an integer >= ${min}`);
    return n;
  };

/** A positive number option (fractions allowed). */
const positive =
  (what: string) =>
  (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${what} must be a number above 0`);
    return n;
  };

/** Prints a failure on stderr (`lessl: Tag: detail`, or the problem document with --json); answers the exit status. */
export const report = (e: unknown, io: Pick<Io, 'err' | 'json'>): number => {
  const p: Problem =
    e instanceof LesslError ? e.problem : clientProblem('RuntimeError', e instanceof Error ? e.message : 'unknown failure');
  if (io.json) io.err.write(`${JSON.stringify(p)}\n`);
  else
    io.err.write(`lessl: ${p.tag}: ${p.detail}${p.keys !== undefined && p.keys.length > 0 ? ` [${p.keys.join(', ')}]` : ''}\n`);
  return 1;
};

/** Where the CLI writes (the process's streams by default). */
export interface Streams {
  readonly out?: NodeJS.WritableStream;
  readonly err?: NodeJS.WritableStream;
  readonly stdin?: NodeJS.ReadableStream;
}

/** Wraps a command's function: a client from the globals, errors reported, the exit status set. */
type Act = <A extends unknown[]>(f: (c: LesslClient, io: Io, ...args: A) => Promise<number>) => (...args: A) => Promise<void>;

/** True when a stream is a terminal. */
const isTty = (w: NodeJS.WritableStream): boolean => 'isTTY' in w && w.isTTY === true;

/** The `act` of a program writing to `out` and `err` (and reading `s.stdin`). */
const actor =
  (s: Streams, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Act =>
  (f) =>
  async (...args) => {
    const self = args.at(-1);
    if (!(self instanceof Command)) throw new Error('commander calls an action with its command last');
    const g = self.optsWithGlobals<Globals>();
    const io: Io = {
      out,
      err,
      json: g.json === true,
      progress: g.json !== true && isTty(err),
      ...(s.stdin === undefined ? {} : { stdin: s.stdin }),
    };
    const c = new LesslClient({
      ...(g.url === undefined ? {} : { url: g.url }),
      ...(g.token === undefined ? {} : { token: g.token }),
    });
    try {
      process.exitCode = await f(c, io, ...args);
    } catch (e) {
      process.exitCode = report(e, io);
    }
  };

/** `lessl serve`. */
const serveCommand = (p: Command, act: Act): void => {
  p.command('serve')
    .description('start the task service (Docker backend over an on-disk database)')
    .option('--data <dir>', 'database directory (default: env LESSL_DATA, else $XDG_DATA_HOME/lessl or ~/.local/share/lessl)')
    .option(
      '--memory',
      'memory backend, no Docker: commands run in a tiny fake shell (echo, sleep, exit); for trying the API (on disk only with --data)',
    )
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'port to listen on (0: a free one)', int('--port'), 8080)
    .option('--concurrency <n>', 'jobs run at once (default 4)', int('--concurrency', 1))
    .option(
      '--policy <file>',
      'JSON file: operator policy (defaults, maxima, defaultTtl, maxTtl, networks, fetch, allowNetworks)',
    )
    .option('--log-level <level>', 'request log level (pino: info, debug, ...); default: no request log')
    .option('--body-limit <bytes>', 'largest request body (default 16 MiB)', int('--body-limit', 1))
    .option('--reap-interval <seconds>', 'seconds between TTL reaper passes (default 30)', int('--reap-interval', 1))
    .addOption(
      new Option('--durability <mode>', 'acknowledged writes survive a power cut (disk: fsync) or a crash only (process)')
        .choices(['disk', 'process'])
        .default('disk'),
    )
    .option('--retain-tasks <seconds>', 'keep deleted and expired task records this long (default 86400)', int('--retain-tasks'))
    .option(
      '--retain-jobs <seconds>',
      'keep ended jobs and their idempotency keys this long (default 86400)',
      int('--retain-jobs'),
    )
    .option('--retain-events <seconds>', 'keep events of the log this long (default 604800)', int('--retain-events'))
    .option('--busybox', "add a public image 'busybox' made from the host's /bin/busybox when missing")
    .option(
      '--config <file>',
      'JSON file: operator configuration { policy?, pool?: { profiles, memoryCapBytes? }, preload?: [{ name, source }], retention?: { tasks?, jobs?, events? }, docker?: { swarm?: { registry, enginesSetNoNewPrivileges?, nodes?, constraints? } } }',
    )
    .option('--tls-cert <file>', 'serve https with this certificate (PEM, chain after it); needs --tls-key')
    .option('--tls-key <file>', 'the private key (PEM, unencrypted) of --tls-cert')
    .option(
      '--proxy-timeout <seconds>',
      "seconds the proxy to tasks' ports waits for a daemon's answer before 504 (default 30)",
      positive('--proxy-timeout'),
    )
    .addHelpText(
      'after',
      '\nThe admin token: env LESSL_ADMIN_TOKEN, or the file env LESSL_ADMIN_TOKEN_FILE names (a secret), else one is printed once at the first start.',
    )
    .action(
      act(async (_c, io, o: ServeOptions) => {
        const { serve, untilSignal } = await import('./serve.js'); // the service's dependencies load only here
        const s2 = await serve(o);
        if (io.json)
          io.out.write(
            `${JSON.stringify({ url: s2.url, adminToken: s2.server.initialAdminToken ?? null, registry: s2.server.backend.instanceId })}\n`,
          );
        else {
          io.out.write(`lessl: listening on ${s2.url}\n`);
          if (s2.server.initialAdminToken !== undefined)
            io.err.write(`lessl: admin token (shown once, keep it): ${s2.server.initialAdminToken}\n`);
        }
        return untilSignal(s2, io.err);
      }),
    );
};

/** `lessl run`, `exec`, `ps`, `logs`, `rm`. */
const taskCommands = (p: Command, act: Act): void => {
  p.command('run')
    .description("submit a task spec (a file, or - for stdin) and stream its output; exits with the task's exit code")
    .argument('<spec>', 'seed-001 task spec JSON (one object, or an array: a batch), or - for stdin')
    .option(
      '--detach-after <seconds>',
      `a daemon: return after this many seconds even when its initial commands still run (default ${cmd.DETACH_MS / 1000})`,
      int('--detach-after'),
    )
    .action(
      act(async (c, io, spec: string, o: { detachAfter?: number }) =>
        cmd.run(c, io, await readSpec(spec, io.stdin), o.detachAfter === undefined ? {} : { detachMs: o.detachAfter * 1000 }),
      ),
    );

  p.command('exec')
    .description('run a command in a running daemon task (its words are joined and run by /bin/sh -c)')
    .argument('<id>', 'task ID')
    .argument('<cmd...>', 'the command, after --')
    .action(act(async (c, io, id: string, words: string[]) => cmd.exec(c, io, id, words)));

  p.command('ps')
    .description('list your tasks, newest first')
    .option('--state <state>', 'only tasks in this state (queued, running, exited, failed, killed, ...)')
    .option('--name <name>', 'only tasks with this task_name')
    .action(act(async (c, io, o: { state?: string; name?: string }) => cmd.ps(c, io, o)));

  p.command('logs')
    .description("print a task's output; -f follows it until the task ends")
    .argument('<id>', 'task ID')
    .option('-f, --follow', 'stream until the task ends')
    .action(act(async (c, io, id: string, o: { follow?: boolean }) => cmd.logs(c, io, id, o.follow === true)));

  p.command('rm')
    .description('kill and remove tasks (idempotent)')
    .argument('<id...>', 'task IDs')
    .action(act(async (c, io, ids: string[]) => cmd.rm(c, io, ids)));
};

/** `lessl images ...`. */
const imageCommands = (p: Command, act: Act): void => {
  const images = p.command('images').description('images: yours and the public ones');
  images
    .command('ls')
    .description('list images')
    .action(act(async (c, io) => cmd.imagesLs(c, io)));
  images
    .command('load')
    .description('upload an image tarball (docker save format)')
    .argument('<name>', 'the image name')
    .argument('<file>', 'the tarball, or - for stdin')
    .action(act(async (c, io, name: string, file: string) => cmd.imagesLoad(c, io, name, file)));
  images
    .command('pull')
    .description('have the service pull an image from a registry')
    .argument('<ref>', 'registry reference')
    .argument('[name]', 'the image name (default: the last part of the reference, without its tag)')
    .action(act(async (c, io, ref: string, name: string | undefined) => cmd.imagesPull(c, io, ref, name)));
  images
    .command('refresh')
    .description("have the service fetch an image's source again (new tasks get new content; running ones keep theirs)")
    .argument('<name>', 'the image name')
    .action(act(async (c, io, name: string) => cmd.imagesRefresh(c, io, name)));
  images
    .command('purge')
    .description('remove least recently used images nothing uses (admins)')
    .option('--unused-for <duration>', 'images unused this long (e.g. 7d, 12h, 30m)')
    .option('--keep-bytes <n>', 'then the oldest until the rest take at most n bytes', int('--keep-bytes'))
    .option('--dry-run', 'only say what would be removed')
    .action(act(async (c, io, o: { unusedFor?: string; keepBytes?: number; dryRun?: boolean }) => cmd.imagesPurge(c, io, o)));
  images
    .command('rm')
    .description('remove images')
    .argument('<name...>', 'image names')
    .action(act(async (c, io, ids: string[]) => cmd.imagesRm(c, io, ids)));
};

/** `lessl pool ...`. */
const poolCommands = (p: Command, act: Act): void => {
  const pool = p.command('pool').description('the warm pool (admins)');
  pool
    .command('show', { isDefault: true })
    .description('profiles with ready and starting containers, hits and misses')
    .action(act(async (c, io) => cmd.poolShow(c, io)));
  pool
    .command('set')
    .description(
      'replace the profiles from a JSON file: { "profiles": [{ "image", "min", "max"?, "idleMs"?, "limits"?, "network"? }], "memoryCapBytes"? }',
    )
    .argument('<file>', 'the JSON file, or - for stdin')
    .action(act(async (c, io, file: string) => cmd.poolSet(c, io, file)));
};

/** `lessl events`. */
const eventCommands = (p: Command, act: Act): void => {
  p.command('events')
    .description(
      'follow the events of your tasks and functions: commands started and ended, tasks removed, functions deployed, invoked, removed (Server-Sent Events)',
    )
    .option('--since <id>', 'replay the events after this event id first (0: from the start)')
    .option('--count <n>', 'exit after n events', int('--count'))
    .option(
      '--all',
      'every element event (images, executors, commands: created, joined, bound, ...), one line each: id type element',
    )
    .action(act(async (c, io, o: { since?: string; count?: number; all?: boolean }) => cmd.events(c, io, o)));
};

/** `lessl users ...`. */
const userCommands = (p: Command, act: Act): void => {
  const users = p.command('users').description('users (admins; a user may remove itself)');
  users
    .command('add')
    .description('add a user; prints its bearer token (shown once)')
    .argument('<name>', 'user name')
    .option('--admin', 'an admin')
    .action(act(async (c, io, name: string, o: { admin?: boolean }) => cmd.usersAdd(c, io, name, o.admin === true)));
  users
    .command('ls')
    .description('list users')
    .action(act(async (c, io) => cmd.usersLs(c, io)));
  users
    .command('rm')
    .description(
      'remove a user and everything it owns (tasks killed, jobs cancelled, functions, images, volumes, hosts; tokens revoked at once), as one durable job; prints the job ID',
    )
    .argument('<name>', 'user name')
    .option('--wait', 'wait for the removal to end; print what was removed and what failed (exit 1 when anything did)')
    .action(act(async (c, io, name: string, o: { wait?: boolean }) => cmd.usersRm(c, io, name, o.wait === true)));
  users
    .command('show')
    .description("a user's quotas: each limit, the usage, who set it (admins, or the user itself)")
    .argument('<name>', 'user name')
    .action(act(async (c, io, name: string) => usersShow(c, io, name)));
  users
    .command('set-quota')
    .description("set a user's own quotas (each value, or default: back to the operator's); prints them")
    .argument('<name>', 'user name')
    .option('--running-tasks <n>', 'tasks not ended (queued or running)')
    .option('--queued-jobs <n>', 'jobs waiting in the queue')
    .option('--image-bytes <size>', 'bytes of images (e.g. 20g)')
    .option('--volume-bytes <size>', 'bytes of volumes (e.g. 20g)')
    .option('--requests-per-second <n>', 'requests per second on average (fractions allowed)')
    .option('--burst <n>', 'requests at once past the average')
    .option('--reset', "every quota not named back to the operator's")
    .action(act(async (c, io, name: string, f: QuotaFlags) => usersSetQuota(c, io, name, f)));
};

/** `lessl route ...`: shared routes to task ports. */
const routeCommands = (p: Command, act: Act): void => {
  const route = p
    .command('route')
    .description('shared routes to a port a task serves: /r/<route>/ reaches it without a token (a secret: share it over TLS)');
  route
    .command('add')
    .description('share a port of a task; prints the URL (shown once)')
    .argument('<task>', 'task ID')
    .argument('<port>', 'a port the task declares in its ports', int('<port>', 1))
    .action(act(async (c, io, task: string, port: number) => routes.routeAdd(c, io, task, port)));
  route
    .command('ls')
    .description("list a task's routes by handle (the URLs are not kept)")
    .argument('<task>', 'task ID')
    .action(act(async (c, io, task: string) => routes.routeLs(c, io, task)));
  route
    .command('rm')
    .description('revoke routes: their URLs answer 404 from now on')
    .argument('<task>', 'task ID')
    .argument('<handle...>', 'route handles (from lessl route ls)')
    .action(act(async (c, io, task: string, handles: string[]) => routes.routeRm(c, io, task, handles)));
};

/** Collects a repeatable option's values. */
const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

/** `lessl fn ...`: functions. */
const fnCommands = (p: Command, act: Act): void => {
  const fn = p.command('fn').description('functions: named commands invoked with input, answering their output');
  fn.command('deploy')
    .description('create or update a function; prints its name and version')
    .argument('<name>', 'the function name')
    .argument('[argv...]', 'the command in exec form (no shell), after --')
    .requiredOption('--image <image>', 'the image its containers start from')
    .option('--cmd <cmd>', 'one shell command (run with /bin/sh -c), instead of an argv after --')
    .option('--env <NAME=VALUE>', 'an environment variable (repeatable)', collect)
    .option('--pwd <dir>', 'the working directory')
    .option('--user <user>', 'the user it runs as')
    .option('--network <mode>', 'the network mode (default none)')
    .addOption(new Option('--reuse <policy>', 'how invocations share containers').choices(['per-invocation', 'per-function']))
    .option('--concurrency <n>', 'invocations one container runs at once (per-function)', int('--concurrency', 1))
    .option('--min <n>', 'containers kept ready', int('--min'))
    .option('--max <n>', 'most containers at once', int('--max', 1))
    .option('--idle <seconds>', 'remove its containers after this long without invocations', int('--idle', 1))
    .option('--timeout <seconds>', 'each invocation is killed after this long', int('--timeout', 1))
    .option('--memory <bytes>', 'memory per container (e.g. 536870912, 512m, 1g)')
    .option('--cpus <n>', 'CPUs per container (fractions allowed)', positive('--cpus'))
    .option('--public', 'every user may invoke it (admins only)')
    .option('--description <text>', 'free text')
    .action(act(async (c, io, name: string, argv: string[], f: DeployFlags) => fns.fnDeploy(c, io, name, argv, f)));
  fn.command('invoke')
    .description('invoke a function: the input goes to its stdin, its stdout to yours; exits with its exit code')
    .argument('<name>', 'the function name')
    .option('--data <text>', 'the input (default: stdin when it is not a terminal, else none)')
    .option('--file <path>', 'the input from a file (- for stdin)')
    .option('--async', 'run it as a job; print the job ID (its result: GET /v1/jobs/{id})')
    .option('-v, --verbose', 'print the exit code, duration, cold or warm start on stderr')
    .action(act(async (c, io, name: string, f: InvokeFlags) => fns.fnInvoke(c, io, name, f)));
  fn.command('ls')
    .description('list your functions and the public ones')
    .action(act(async (c, io) => fns.fnLs(c, io)));
  fn.command('rm')
    .description('remove functions (invocations under way are killed)')
    .argument('<name...>', 'function names')
    .action(act(async (c, io, names: string[]) => fns.fnRm(c, io, names)));
  fn.command('logs')
    .description("a function's newest invocations: exit codes, durations, cold or warm, the end of their stderr")
    .argument('<name>', 'the function name')
    .action(act(async (c, io, name: string) => fns.fnLogs(c, io, name)));
};

/** `lessl up`: the stack file. */
const upCommand = (p: Command, act: Act): void => {
  p.command('up')
    .description('sync the images and functions of a stack file with the service: print the plan, apply it')
    .option('-f, --file <file>', 'the stack file (YAML)', 'lessl.yml')
    .option('--dry-run', 'print the plan only')
    .option('--prune', 'remove your functions the file does not name, and images a stack made that it does not name')
    .option('-y, --yes', 'remove without asking')
    .action(act(async (c, io, o: UpOptions) => up(c, io, o)));
};

/** Builds the `lessl` program; commands set `process.exitCode`. */
export const program = (s: Streams = {}): Command => {
  const out = s.out ?? process.stdout;
  const err = s.err ?? process.stderr;
  const p = new Command('lessl')
    .description('lessl: run seed-001 task specs in containers through the lessl task service')
    .version(VERSION, '-V, --version', 'print the version of lessl')
    .addOption(new Option('--url <url>', 'the service (default: env LESSL_URL, else http://127.0.0.1:8080)'))
    .addOption(new Option('--token <token>', 'bearer token (default: env LESSL_TOKEN)'))
    .option('--json', 'machine-readable output: JSON on stdout, problem documents on stderr')
    .showHelpAfterError();
  const act = actor(s, out, err);
  for (const add of [
    serveCommand,
    taskCommands,
    imageCommands,
    poolCommands,
    eventCommands,
    userCommands,
    routeCommands,
    fnCommands,
    upCommand,
  ])
    add(p, act);
  return p;
};

/** Runs the CLI on `argv` (process.argv by default). */
export const main = async (argv: readonly string[] = process.argv, s: Streams = {}): Promise<void> => {
  const out = s.out ?? process.stdout;
  out.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  });
  await program(s).parseAsync([...argv]);
};
