/**
 * `lessl users show NAME` and `lessl users set-quota NAME --running-tasks N ...`: a user's quotas
 * (the ones in force, who set each, the usage) and an admin's change of them.
 */
import type { QuotaPatch, UserQuotaView } from '@lessl/service';
import { clientProblem, LesslError, type LesslClient } from './client.js';
import { bytes, table, type Io } from './commands.js';
import { parseBytes } from './fn.js';

/** The flags of `lessl users set-quota` (each a value, or `default`: back to the operator's). */
export interface QuotaFlags {
  readonly runningTasks?: string;
  readonly queuedJobs?: string;
  readonly imageBytes?: string;
  readonly volumeBytes?: string;
  readonly requestsPerSecond?: string;
  readonly burst?: string;
  /** Every quota back to the operator's. */
  readonly reset?: boolean;
}

type QuotaName = keyof QuotaPatch;

/** The quotas, their flags and how a value is read: a count, a size (`20g`), a rate (fractions allowed). */
const QUOTAS: readonly { readonly name: QuotaName; readonly flag: string; readonly kind: 'count' | 'bytes' | 'rate' }[] = [
  { name: 'runningTasks', flag: '--running-tasks', kind: 'count' },
  { name: 'queuedJobs', flag: '--queued-jobs', kind: 'count' },
  { name: 'imageBytes', flag: '--image-bytes', kind: 'bytes' },
  { name: 'volumeBytes', flag: '--volume-bytes', kind: 'bytes' },
  { name: 'requestsPerSecond', flag: '--requests-per-second', kind: 'rate' },
  { name: 'burst', flag: '--burst', kind: 'count' },
];

const invalid = (detail: string, key: string): LesslError => new LesslError(clientProblem('InvalidEntry', detail, 0, [key]));

/** One flag's value: `default` is null; the service checks the ranges (burst >= 1, a rate above 0). */
const valueOf = (flag: string, kind: 'count' | 'bytes' | 'rate', v: string): number | null => {
  if (v === 'default') return null;
  if (kind === 'bytes') {
    if (/^0+$/.test(v.trim())) return 0;
    try {
      return parseBytes(v);
    } catch {
      throw invalid(`${flag}: not a size: ${v} (e.g. 1073741824, 512m, 20g, or default)`, flag.slice(2));
    }
  }
  const n = Number(v);
  const ok = kind === 'rate' ? Number.isFinite(n) && n > 0 : Number.isSafeInteger(n) && n >= 0;
  if (v.trim() === '' || !ok)
    throw invalid(`${flag}: ${kind === 'rate' ? 'a number above 0' : 'an integer >= 0'} or default, not ${v}`, flag.slice(2));
  return n;
};

/** The change the flags ask for: `--reset` (all back to the operator's), then the quotas named. */
export const quotaPatch = (f: QuotaFlags): QuotaPatch | null => {
  const patch: Partial<Record<QuotaName, number | null>> = {};
  for (const q of QUOTAS) {
    const v = f[q.name];
    if (v !== undefined) patch[q.name] = valueOf(q.flag, q.kind, v);
  }
  const named = Object.keys(patch).length > 0;
  if (f.reset === true && !named) return null;
  if (f.reset === true) for (const q of QUOTAS) patch[q.name] ??= null;
  if (!named && f.reset !== true)
    throw invalid(`name a quota to set: ${QUOTAS.map((q) => q.flag).join(', ')} (or --reset)`, 'quotas');
  return patch;
};

/** Prints a user's quotas: per quota its limit, the usage and who set it (the user's own value, or the operator's). */
const showQuotas = (io: Io, v: UserQuotaView): number => {
  const used: Partial<Record<QuotaName, number>> = v.usage;
  const own: Partial<Record<QuotaName, number>> = v.own;
  return table(io, v, ['QUOTA', 'LIMIT', 'USAGE', 'SET BY'], () => [
    ...QUOTAS.map((q) => {
      const [limit, usage] = [v.quotas[q.name], used[q.name]];
      const shown = (n: number | undefined): string => (n === undefined ? '-' : q.kind === 'bytes' ? bytes(n) : String(n));
      return [q.name, shown(limit), shown(usage), v.exempt ? 'exempt (admin)' : own[q.name] === undefined ? 'operator' : 'user'];
    }),
  ]);
};

/** `lessl users show NAME`: the quotas in force for a user and what they hold (admins, or the user itself). */
export const usersShow = async (c: LesslClient, io: Io, name: string): Promise<number> => showQuotas(io, await c.user(name));

/** `lessl users set-quota NAME --running-tasks N ...` (admins): sets a user's own quotas; prints them as `show` does. */
export const usersSetQuota = async (c: LesslClient, io: Io, name: string, f: QuotaFlags): Promise<number> =>
  showQuotas(io, await c.setQuotas(name, quotaPatch(f)));
