/**
 * Docker's streams: progress JSON lines (`followJson`), uploads that fail with their source's
 * error and check the engine while they wait (`withTar`), and pulls that go silent (`watchStall`).
 */
import { fieldOf as prop, isObject as isRecord } from '@lessl/core';

/**
 * Destroys `stream` when it delivers nothing for `ms` (a pull whose registry went silent: the
 * engine waits for it forever). `stalled()` says whether it did; `stop()` ends the watch.
 */
export const watchStall = (stream: NodeJS.ReadableStream, ms: number): { stalled: () => boolean; stop: () => void } => {
  let stalled = false;
  let timer: NodeJS.Timeout | undefined;
  const arm = (): void => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      stalled = true;
      if ('destroy' in stream && typeof stream.destroy === 'function') stream.destroy(new Error(`nothing for ${ms} ms`));
    }, ms);
  };
  stream.on('data', arm);
  arm();
  return { stalled: () => stalled, stop: () => (clearTimeout(timer), stream.removeListener('data', arm)) };
};

/** Reads a Docker JSON-lines progress stream; an `error` inside an HTTP 200 stream is a failure. */
export const followJson = async (
  stream: NodeJS.ReadableStream,
  onMessage?: (m: Record<string, unknown>) => void,
): Promise<{ messages: Record<string, unknown>[]; error?: string }> => {
  const messages: Record<string, unknown>[] = [];
  let rest = '';
  let error: string | undefined;
  for await (const chunk of stream) {
    rest += chunk.toString();
    const lines = rest.split(/\r?\n/);
    rest = lines.pop() ?? '';
    for (const line of lines) {
      if (line.trim() === '') continue;
      try {
        const m: unknown = JSON.parse(line);
        if (!isRecord(m)) {
          messages.push({ raw: line });
          continue;
        }
        messages.push(m);
        onMessage?.(m);
        if (typeof m.error === 'string') error ??= m.error;
        const detail = prop(m.errorDetail, 'message');
        if (typeof detail === 'string') error ??= detail;
      } catch {
        messages.push({ raw: line });
      }
    }
  }
  if (rest.trim() !== '') {
    try {
      const m: unknown = JSON.parse(rest);
      messages.push(isRecord(m) ? m : { raw: rest });
      if (isRecord(m) && typeof m.error === 'string') error ??= m.error;
    } catch {
      messages.push({ raw: rest });
    }
  }
  return error === undefined ? { messages } : { messages, error };
};

/** How an upload makes sure the engine is alive while it waits on it (see `withTar`). */
export interface Liveness {
  /** How long an upload waits between two checks. */
  readonly everyMs: number;
  /** A bounded call to the engine (a ping): its failure fails the upload. */
  readonly check: () => Promise<unknown>;
}

/**
 * Sends a tar stream to Docker: when the stream fails (a refused entry, a broken source), the
 * request is aborted and the stream's own error is thrown, not Docker's view of a cut upload.
 * With `live`, the engine is checked every `everyMs` while the upload (and its answer) is
 * pending: an engine that does not answer (frozen, gone) aborts the request and its error is
 * thrown (`Unavailable`), where the upload would otherwise wait for ever on a socket nobody reads.
 */
export const withTar = async <A>(
  tar: NodeJS.ReadableStream,
  fn: (signal: AbortSignal) => Promise<A>,
  live?: Liveness,
): Promise<A> => {
  const early = prop(tar, 'errored');
  if (early !== null && early !== undefined) throw early; // refused before anyone listened
  const ac = new AbortController();
  let stop: (e: unknown) => void = () => undefined;
  // An aborted request does not always settle: race it against the stream's own failure.
  const failed = new Promise<never>((_, reject) => {
    stop = (e) => {
      ac.abort();
      reject(e);
    };
  });
  failed.catch(() => undefined);
  tar.on('error', (e: unknown) => stop(e));
  let done = false;
  let timer: NodeJS.Timeout | undefined;
  const watch = (l: Liveness): void => {
    timer = setTimeout(() => {
      l.check().then(
        () => (done ? undefined : watch(l)),
        (e: unknown) => stop(e),
      );
    }, l.everyMs);
  };
  if (live !== undefined) watch(live);
  try {
    return await Promise.race([fn(ac.signal), failed]);
  } finally {
    done = true;
    clearTimeout(timer);
  }
};
