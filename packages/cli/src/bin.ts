#!/usr/bin/env node
/** The `lessl` executable. */
import { main } from './cli.js';

await main();
