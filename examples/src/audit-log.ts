/**
 * An audit-log subscriber: prints lessl's event stream as JSON lines (seq, time, type, id,
 * revision, detail) while a small workflow runs. `since: 0` replays the whole durable log first.
 */
import { eventToJson, unwrap, type LesslEvent } from '@lessl/core';
import type { DockerBackend } from '@lessl/docker';
import { BASE, ensureBase, main, name, runTask } from './common.js';

/** Follows the stream from the start, printing each event, until `stop` is called. */
export const follow = (lessl: DockerBackend, print: (line: string) => void = console.log) => {
  const ac = new AbortController();
  const seen: LesslEvent[] = [];
  const done = (async () => {
    for await (const e of lessl.events.stream({}, { since: 0, signal: ac.signal })) {
      seen.push(e);
      print(JSON.stringify(eventToJson(e)));
    }
  })();
  return {
    seen,
    stop: async () => {
      ac.abort();
      await done;
    },
  };
};

export const run = async (lessl: DockerBackend) => {
  const audit = follow(lessl);
  await ensureBase(lessl);
  const vol = `volume://local/${name('audit')}`;
  await unwrap(lessl.stores.volume.create({ id: vol }));
  await runTask(lessl, { image: BASE, volumes: [{ id: vol, at: '/data' }], cmd: ['sh', '-c', 'date > /data/when'] });
  await unwrap(lessl.stores.volume.delete(vol));
  await new Promise((r) => setTimeout(r, 50));
  await audit.stop();
  return { events: audit.seen.map((e) => `${e.seq} ${e.type} ${e.id.key}`) };
};

main(import.meta, run);
