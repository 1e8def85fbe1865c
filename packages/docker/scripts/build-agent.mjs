// Builds lessl-agent (the in-container agent of warm containers) from agent/lessl-agent.c with
// Debian's toolchain (gcc and libc6-dev: `gcc -static -Os -s`) into agent/lessl-agent, which the
// package ships. Skipped when the binary is newer than its source. Without a compiler it warns and
// the backend runs warm tasks with `docker exec` (its capability manifest says so); with CI=true a
// missing compiler fails the build.
import { execFileSync } from 'node:child_process';
import { existsSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = join(dirname(fileURLToPath(import.meta.url)), '..', 'agent');
const src = join(dir, 'lessl-agent.c');
const out = join(dir, 'lessl-agent');
const cc = process.env.CC ?? 'gcc';

if (existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs) process.exit(0);
try {
  execFileSync(cc, ['-static', '-Os', '-s', '-Wall', '-Wextra', '-o', out, src], { stdio: ['ignore', 'inherit', 'pipe'] });
} catch (err) {
  rmSync(out, { force: true });
  const stderr = err instanceof Error && 'stderr' in err && err.stderr ? String(err.stderr).trim() : '';
  const why = stderr || (err instanceof Error ? err.message : String(err));
  const msg =
    `lessl: could not build the in-container agent with ${cc} (${why.split('\n')[0]}).\n` +
    "lessl: install Debian's gcc and libc6-dev (apt-get install gcc libc6-dev); until then warm tasks run with docker exec.";
  console.warn(msg);
  if (process.env.CI === 'true') process.exit(1);
}
