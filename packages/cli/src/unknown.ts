/** Reading values of unknown shape: the core's helpers, by the names the CLI uses. */
export { fieldOf as field, messageOf } from '@lessl/core';
