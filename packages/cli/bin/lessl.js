#!/usr/bin/env node
// The `lessl` executable as npm links it: committed, so `npm ci` in a fresh clone links the bin
// before the build exists; it runs the built CLI, or says how to build it.
import { existsSync } from 'node:fs';

const built = new URL('../dist/bin.js', import.meta.url);
if (existsSync(built)) await import(built.href);
else {
  process.stderr.write('lessl: the CLI is not built yet: run `npm run build` at the root of the lessl clone\n');
  process.exitCode = 1;
}
