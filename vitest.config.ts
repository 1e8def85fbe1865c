import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['packages/*/test/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
    // an unhandled rejection or uncaught exception anywhere fails the run; leak warnings fail the test
    dangerouslyIgnoreUnhandledErrors: false,
    setupFiles: ['./test/leaks.setup.ts'],
  },
});
