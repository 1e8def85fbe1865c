/**
 * What the generic layer does for the task spec fields every backend shares, when a task is
 * bound: refuses the fields no backend runs (`Unsupported` naming the field) and resolves
 * credentials through the caller's resolver into secrets for the driver alone.
 */
import * as E from 'fp-ts/lib/Either.js';
import {
  CredentialValueC,
  decodeExact,
  describeCause,
  isLesslError,
  restarts,
  runtimeError,
  unsupported,
  type AnyError,
  type CredentialResolver,
  type CredentialValue,
  type TaskSpec,
  type Unsupported,
  type ElementId,
} from '@lessl/core';
import type { Secrets, SecretFile } from './drivers.js';

/** A run without credentials. */
export const NO_SECRETS: Secrets = Object.freeze({ env: Object.freeze({}), files: Object.freeze([]) });

/**
 * The first spec field that no backend honours yet, as `Unsupported` naming it: a terminal
 * (`interaction.tty: true`), `log.destination: 'file'` (the spec names no file), and input
 * (`interaction.stdin: true`) for a task that restarts (its input is read once: a restart would
 * find none). `false` and the other destinations are honoured.
 */
export const unsupportedField = (task: string, spec: TaskSpec): Unsupported | undefined => {
  if (spec.interaction?.stdin === true && restarts(spec))
    return unsupported(task, 'spec.interaction.stdin', 'a task that restarts takes no input: a restart would find none');
  if (spec.interaction?.tty === true) return unsupported(task, 'spec.interaction.tty', 'tasks run without a terminal');
  if (spec.log?.destination === 'file')
    return unsupported(task, 'spec.log.destination', "'file' names no file; use 'buffer' (kept by lessl) or 'none'");
  return undefined;
};

const enc = new TextEncoder();

/** Calls a resolver, whatever it answers (a Promise or a TaskEither), and never throws. */
const callResolver = async (
  resolve: CredentialResolver,
  ref: string,
  ctx: { name: string; task: ElementId; executor: ElementId },
): Promise<E.Either<AnyError, unknown>> => {
  const failed = (err: unknown): E.Either<AnyError, never> =>
    E.left(
      isLesslError(err)
        ? err
        : runtimeError(ctx.task.key, `credential ${ctx.name} could not be resolved: ${describeCause(err)}`, err),
    );
  try {
    const r: unknown = resolve(ref, ctx);
    if (typeof r !== 'function') return E.right(await r);
    const out = (await (r as () => Promise<unknown>)()) as E.Either<unknown, unknown>;
    if (E.isLeft(out)) return failed(out.left);
    return E.right(out.right);
  } catch (err) {
    return failed(err);
  }
};

/**
 * Resolves every credential of a spec into secrets. No credentials: none. Credentials without a
 * resolver: `Unsupported` naming `spec.credentials`. A resolver that fails answers its error (a
 * lessl error as is, anything else `RuntimeError`); an answer of the wrong shape is
 * `InvalidEntry` naming the offending fields (never their values). Later credentials win on
 * the same variable or path.
 */
export const resolveSecrets = async (
  resolve: CredentialResolver | undefined,
  taskId: ElementId,
  executor: ElementId,
  spec: TaskSpec,
): Promise<E.Either<AnyError, Secrets>> => {
  const task = taskId.key;
  const creds = spec.credentials ?? [];
  if (creds.length === 0) return E.right(NO_SECRETS);
  if (resolve === undefined)
    return E.left(
      unsupported(task, 'spec.credentials', 'no credential resolver: open the backend with a `credentials` resolver'),
    );
  const env: Record<string, string> = Object.create(null) as Record<string, string>;
  const files = new Map<string, SecretFile>();
  for (const c of creds) {
    const got = await callResolver(resolve, c.ref, { name: c.name, task: taskId, executor });
    if (E.isLeft(got)) return got;
    const v = decodeExact(CredentialValueC, task, got.right, `credential ${c.name}`, `credentials.${c.name}`);
    if (E.isLeft(v)) return v;
    const value: CredentialValue = v.right;
    for (const [k, x] of Object.entries(value.env ?? {})) env[k] = x;
    for (const [path, data] of Object.entries(value.files ?? {}))
      files.set(path, { path, data: typeof data === 'string' ? enc.encode(data) : data });
  }
  return E.right({ env: { ...env }, files: [...files.values()] });
};
