/**
 * `lessl up -f lessl.yml [--dry-run] [--prune] [--yes]`: syncs a stack file's images and functions
 * with the service. It reads what the service has, computes the plan (create, update with the
 * fields that differ, unchanged, remove), prints it, and applies it: images first (made from their
 * source, waited for), then functions, then removals. Images it makes carry a mark in their
 * description, so `--prune` removes only images a stack made. A failure part-way says what was
 * applied and what was not; running it again converges.
 */
import { createInterface } from 'node:readline/promises';
import { FUNCTION_DEFAULTS, type FunctionBody, type FunctionView, type Stack } from '@lessl/service/stack';
import { clientProblem, LesslError, type ImageView, type LesslClient, type NewImage } from './client.js';
import { note, spinner, writeJson, type Io } from './commands.js';
import { listFunctions, putFunction, removeFunction, whoami } from './functions.js';
import { loadStack } from './stack-file.js';
import { field, messageOf } from './unknown.js';

/** Options of `lessl up`. */
export interface UpOptions {
  readonly file: string;
  readonly dryRun?: boolean;
  readonly prune?: boolean;
  readonly yes?: boolean;
}

/** What a step does. `extra`: on the service, not in the file, kept (without --prune). */
export type Action = 'create' | 'update' | 'unchanged' | 'remove' | 'extra';

/** One step of a plan. */
export interface Step {
  readonly kind: 'image' | 'function';
  readonly name: string;
  readonly action: Action;
  /** An update's changed fields; an image's source; why an image is used as is. */
  readonly detail?: string;
  /** What applying it does; answers what it did. */
  readonly apply?: () => Promise<string>;
}

/** The description `lessl up` gives the images it makes for `user`: how `--prune` knows them. */
export const stackMark = (user: string): string => `made by lessl up for ${user}`;

/** The fields of a function body, in the order a plan names them. */
const FIELDS = [
  'image',
  'argv',
  'cmd',
  'env',
  'pwd',
  'user',
  'limits',
  'network',
  'reuse',
  'concurrency',
  'min_containers',
  'max_containers',
  'idle_seconds',
  'public',
  'description',
] as const;

/** A value as compared: defaults applied, empty values as absent, image IDs as names, object keys sorted. */
const canon = (k: string, v: unknown): string => {
  const d: unknown = v ?? field(FUNCTION_DEFAULTS, k);
  if (d === null || d === undefined || d === '') return '';
  if (k === 'image' && typeof d === 'string') return d.replace(/^image:\/\/[^/]+\//, '');
  if (typeof d !== 'object' || Array.isArray(d)) return JSON.stringify(d);
  const entries = Object.entries(d).sort(([a], [b]) => (a < b ? -1 : 1));
  return entries.length === 0 ? '' : JSON.stringify(entries);
};

/** The service's limits as far as the file sets them (the service fills in the others). */
const limitsSeen = (want: FunctionBody, have: FunctionView): Record<string, unknown> =>
  Object.fromEntries(Object.keys(want.limits ?? {}).map((k) => [k, field(have.limits, k)]));

/** The fields in which the service's function differs from the file's. */
export const changedFields = (want: FunctionBody, have: FunctionView): string[] =>
  FIELDS.filter((k) => canon(k, field(want, k)) !== canon(k, k === 'limits' ? limitsSeen(want, have) : field(have, k)));

/** What the service has that a plan is computed against. */
interface Server {
  readonly me: { readonly name: string; readonly admin: boolean };
  readonly functions: readonly FunctionView[];
  readonly images: readonly ImageView[];
}

/** The image steps: the file's images (create when missing), and with `prune` the caller's stack images it dropped. */
const imageSteps = (c: LesslClient, stack: Stack, s: Server, prune: boolean): Step[] => {
  const mark = stackMark(s.me.name);
  const byName = new Map(s.images.map((i) => [i.name, i]));
  const steps: Step[] = Object.entries(stack.images ?? {}).map(([name, img]): Step => {
    const have = byName.get(name);
    if (have !== undefined)
      return {
        kind: 'image',
        name,
        action: 'unchanged',
        ...(have.description === mark ? {} : { detail: 'used as is (not made by your lessl up: --prune keeps it)' }),
      };
    const body: NewImage = { name, source: img.source, description: mark, ...(img.public === true ? { public: true } : {}) };
    const apply = async (): Promise<string> => `created image ${(await c.createImage(body)).name}`;
    return { kind: 'image', name, action: 'create', detail: `from ${img.source.type}`, apply };
  });
  const dropped = s.images.filter((i) => i.description === mark && stack.images?.[i.name] === undefined);
  return [...steps, ...dropped.map((i) => removal(i.name, 'image', prune, () => c.removeImage(i.name)))];
};

/** A step for something the file no longer names: removed with --prune, else kept. */
const removal = (name: string, kind: Step['kind'], prune: boolean, remove: () => Promise<void>): Step =>
  prune
    ? { kind, name, action: 'remove', apply: async () => (await remove(), `removed ${kind} ${name}`) }
    : { kind, name, action: 'extra', detail: 'not in the file: kept (--prune removes it)' };

/** The function steps: create, update or unchanged for the file's; with `prune`, removal of the caller's others. */
const functionSteps = (c: LesslClient, stack: Stack, s: Server, prune: boolean): Step[] => {
  const byName = new Map(s.functions.map((f) => [f.name, f]));
  const put = (name: string, body: FunctionBody, verb: string) => async (): Promise<string> =>
    `${verb} function ${name} version ${(await putFunction(c, name, body)).view.version}`;
  const steps = Object.entries(stack.functions ?? {}).map(([name, body]): Step => {
    const have = byName.get(name);
    if (have === undefined) return { kind: 'function', name, action: 'create', apply: put(name, body, 'created') };
    const fields = changedFields(body, have);
    if (fields.length === 0) return { kind: 'function', name, action: 'unchanged', detail: `version ${have.version}` };
    const detail = `${fields.join(', ')} (version ${have.version})`;
    return { kind: 'function', name, action: 'update', detail, apply: put(name, body, 'updated') };
  });
  const mine = s.functions.filter((f) => f.owner === s.me.name && stack.functions?.[f.name] === undefined);
  return [...steps, ...mine.map((f) => removal(f.name, 'function', prune, () => removeFunction(c, f.name)))];
};

/** What keeps the plan from being applied: names another user owns, images neither the file nor the service has. */
const conflicts = (stack: Stack, s: Server): string[] => {
  const images = new Set([...Object.keys(stack.images ?? {}), ...s.images.map((i) => i.name)]);
  return Object.entries(stack.functions ?? {}).flatMap(([name, f]) => {
    const other = s.functions.find((x) => x.name === name && x.owner !== s.me.name);
    return [
      ...(other === undefined ? [] : [`functions.${name}: the function ${name} is ${other.owner ?? 'another user'}'s`]),
      ...(f.image.startsWith('image://') || images.has(f.image)
        ? []
        : [`functions.${name}.image: no image ${f.image} in the file or on the service`]),
    ];
  });
};

/** Reads the service and computes the plan of a stack; conflicts throw before anything is applied. */
export const planStack = async (c: LesslClient, stack: Stack, prune: boolean): Promise<Step[]> => {
  await c.requireRoute('GET', '/v1/functions'); // an older service: Unsupported, not a bare 404
  const [me, functions, images] = await Promise.all([whoami(c), listFunctions(c), c.images()]);
  const s: Server = { me, functions, images };
  const bad = conflicts(stack, s);
  if (bad.length > 0)
    throw new LesslError(clientProblem('NameCollision', `the stack cannot be applied; nothing was:\n  ${bad.join('\n  ')}`, 409));
  // images before functions (functions start from them), removals of functions before those of images
  const fns = functionSteps(c, stack, s, prune);
  const imgs = imageSteps(c, stack, s, prune);
  const removals = (xs: Step[]) => xs.filter((x) => x.action === 'remove' || x.action === 'extra');
  const others = (xs: Step[]) => xs.filter((x) => x.action !== 'remove' && x.action !== 'extra');
  return [...others(imgs), ...others(fns), ...removals(fns), ...removals(imgs)];
};

const SIGN: Readonly<Record<Action, string>> = { create: '+', update: '~', unchanged: '=', remove: '-', extra: '?' };

/** Counts of a plan's actions, as a sentence. */
const summary = (steps: readonly Step[], verbs: Readonly<Record<Action, string>>): string => {
  const n = (a: Action) => steps.filter((x) => x.action === a).length;
  const parts = (['create', 'update', 'remove', 'unchanged'] as const).filter((a) => n(a) > 0).map((a) => `${n(a)} ${verbs[a]}`);
  return parts.length === 0 ? 'nothing to do' : parts.join(', ');
};

/** Prints a plan, one line per step. */
const printPlan = (io: Io, file: string, steps: readonly Step[]): void => {
  const width = Math.max(0, ...steps.map((x) => x.name.length));
  io.out.write(`plan for ${file}:\n`);
  for (const x of steps) {
    const what = x.detail === undefined ? x.action : `${x.action}: ${x.detail}`;
    io.out.write(`  ${SIGN[x.action]} ${x.kind.padEnd(8)} ${x.name.padEnd(width)}  ${what}\n`);
  }
  const changes = steps.some((x) => x.apply !== undefined);
  io.out.write(
    changes
      ? `${summary(steps, { create: 'to create', update: 'to update', remove: 'to remove', unchanged: 'unchanged', extra: '' })}\n`
      : 'everything is unchanged\n',
  );
};

/** Asks on a terminal whether to remove what the plan removes; elsewhere refuses without --yes (never waits for input). */
const confirmRemovals = async (io: Io, steps: readonly Step[], yes: boolean): Promise<void> => {
  const gone = steps.filter((x) => x.action === 'remove');
  if (gone.length === 0 || yes) return;
  const list = gone.map((x) => `${x.kind} ${x.name}`).join(', ');
  const stdin = io.stdin ?? process.stdin;
  if (!('isTTY' in stdin && stdin.isTTY === true))
    throw new LesslError(
      clientProblem('Aborted', `the plan removes ${list}: pass --yes to apply it; nothing was applied`, 0, ['yes']),
    );
  const rl = createInterface({ input: stdin, output: io.err });
  const answer = await rl.question(`remove ${list}? [y/N] `).finally(() => rl.close());
  if (!/^y(es)?$/i.test(answer.trim())) throw new LesslError(clientProblem('Aborted', 'nothing was applied', 0));
};

/** Applies the steps in order; a failure throws what was applied and what was not. */
const applySteps = async (io: Io, steps: readonly Step[]): Promise<string[]> => {
  const done: string[] = [];
  const todo = steps.filter((x) => x.apply !== undefined);
  for (const [i, x] of todo.entries()) {
    const spin = spinner(io, `${x.action} ${x.kind} ${x.name}`);
    try {
      const line = await (x.apply?.() ?? Promise.resolve(''));
      done.push(line);
      if (!io.json) io.out.write(`${line}\n`);
    } catch (e) {
      const rest = todo.slice(i).map((y) => `${y.action} ${y.kind} ${y.name}`);
      const why = e instanceof LesslError ? `${e.tag}: ${e.problem.detail}` : messageOf(e);
      const tag = e instanceof LesslError ? e.tag : 'RuntimeError';
      const detail = `${rest[0] ?? ''} failed: ${why}\n  applied: ${done.length === 0 ? 'nothing' : done.join('; ')}\n  not applied: ${rest.join('; ')}\n  run lessl up again to converge`;
      throw new LesslError(clientProblem(tag, detail, e instanceof LesslError ? e.status : 0));
    } finally {
      spin?.stop();
    }
  }
  return done;
};

/** `lessl up -f FILE`: prints the plan; unless `dryRun`, applies it. */
export const up = async (c: LesslClient, io: Io, o: UpOptions): Promise<number> => {
  const { stack } = await loadStack(o.file);
  const steps = await planStack(c, stack, o.prune === true);
  const plan = steps.map(({ kind, name, action, detail }) => ({
    kind,
    name,
    action,
    ...(detail === undefined ? {} : { detail }),
  }));
  if (!io.json) printPlan(io, o.file, steps);
  if (o.dryRun === true) {
    if (io.json) writeJson(io, { plan, applied: [] });
    else note(io, 'dry run: nothing was applied');
    return 0;
  }
  await confirmRemovals(io, steps, o.yes === true);
  const applied = await applySteps(io, steps);
  if (io.json) writeJson(io, { plan, applied });
  else if (applied.length > 0)
    io.out.write(
      `done: ${summary(steps, { create: 'created', update: 'updated', remove: 'removed', unchanged: 'unchanged', extra: '' })}\n`,
    );
  return 0;
};
