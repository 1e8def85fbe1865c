/**
 * Workflow 8: use of an image: compose an executor from the image and a task, bind, commit; the
 * task runs to its end and its result comes back with the commit.
 */
import type { DockerBackend } from '@lessl/docker';
import { BASE, ensureBase, err, main, out, runTask } from './common.js';

export const run = async (lessl: DockerBackend) => {
  await ensureBase(lessl);
  const { commit, task } = await runTask(lessl, { image: BASE, cmd: ['sh', '-c', 'echo to-stdout; echo to-stderr >&2; exit 3'] });
  return { committed: commit.committed, exitCode: task?.exitCode, stdout: out(task).trim(), stderr: err(task).trim() };
};

main(import.meta, run);
