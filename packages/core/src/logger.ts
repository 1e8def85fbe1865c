/**
 * The logger hook: backends report what they do (open, recovery, reconciliation, task start and
 * end, engine trouble, janitor and pool work, registry write failures) through a logger the
 * embedder gives. The interface is the part of pino lessl uses, so a pino logger fits as is.
 */
import * as t from 'io-ts';

/** Fields of a log line. Never secrets: lessl logs IDs, exit codes, reasons and durations. */
export type LogFields = object;

/** What lessl logs through: pino-compatible (`logger.info({ task }, 'task started')`). */
export interface Logger {
  debug(obj: LogFields, msg?: string): void;
  info(obj: LogFields, msg?: string): void;
  warn(obj: LogFields, msg?: string): void;
  error(obj: LogFields, msg?: string): void;
  /** A logger whose every line carries `bindings` (pino's `child`); optional. */
  child?(bindings: Record<string, unknown>): Logger;
}

const LEVELS = ['debug', 'info', 'warn', 'error'] as const;

/** The default: logs nothing. */
export const noopLogger: Logger = Object.freeze({
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
});

/** True when `u` has the four level functions (and `child`, if any, is a function). Never throws. */
export const isLogger = (u: unknown): u is Logger => {
  try {
    if ((typeof u !== 'object' && typeof u !== 'function') || u === null) return false;
    const l: Partial<Record<string, unknown>> = u;
    return LEVELS.every((k) => typeof l[k] === 'function') && (l.child === undefined || typeof l.child === 'function');
  } catch {
    return false;
  }
};

/** io-ts codec of the `logger` open option. */
export const LoggerC = new t.Type<Logger, Logger, unknown>(
  'Logger',
  isLogger,
  (u, c) => (isLogger(u) ? t.success(u) : t.failure(u, c, 'a logger needs debug, info, warn and error functions')),
  t.identity,
);

/**
 * A logger that never throws into lessl (a failing logger loses its line, nothing else), with
 * `bindings` on every line (through `child` when the logger has one). Without a logger: `noopLogger`.
 */
export const safeLogger = (l: Logger | undefined, bindings?: Record<string, unknown>): Logger => {
  if (l === undefined || l === noopLogger) return noopLogger;
  let base: Logger = l;
  let extra: Record<string, unknown> | undefined = bindings;
  if (bindings !== undefined && typeof l.child === 'function') {
    try {
      base = l.child(bindings);
      extra = undefined;
    } catch {
      base = l;
    }
  }
  const line =
    (level: (typeof LEVELS)[number]) =>
    (obj: LogFields, msg?: string): void => {
      try {
        const fields = extra === undefined ? obj : { ...extra, ...obj };
        if (msg === undefined) base[level](fields);
        else base[level](fields, msg);
      } catch {
        // a logger that throws must not break the operation it reports on
      }
    };
  const out: Logger = { debug: line('debug'), info: line('info'), warn: line('warn'), error: line('error') };
  return Object.freeze({ ...out, child: (b: Record<string, unknown>) => safeLogger(l, { ...bindings, ...b }) });
};

/** A short, secret-free description of an error for a log line. */
export const logError = (err: unknown): string => {
  try {
    if (err instanceof Error) return err.message;
    return typeof err === 'string' ? err : String(err);
  } catch {
    return 'an error that cannot be shown';
  }
};
