/**
 * @lessl/cli: the `lessl` command line of the lessl task service, and the typed REST client it
 * is built on (`LesslClient`), for scripts and benchmarks.
 * @packageDocumentation
 */
export * from './client.js';
export { exitStatusOf, readSpec, type Io } from './commands.js';
export { main, program, report, type Streams } from './cli.js';
export { serve, defaultDataDir, type ServeOptions } from './serve.js';
export { formatProblem, loadStack, parseStack, type LoadedStack, type StackProblem, type StackRead } from './stack-file.js';
