// The image's HEALTHCHECK (no shell in the image: node runs it). It asks the service in this
// container for GET /healthz where `lessl serve` listens: the port, host and scheme are read
// from the flags of the container's main process (/proc/1/cmdline; the last of a repeated flag
// wins, as for serve). Exit 0 when it answers 200 within 4 s, else 1.
import { readFileSync } from 'node:fs';
import { request as http } from 'node:http';
import { request as https } from 'node:https';

/** The value of `--name v` or `--name=v` last given in `args`, else undefined. */
const flag = (args, name) => {
  let v;
  args.forEach((a, i) => {
    if (a === `--${name}`) v = args[i + 1];
    else if (a.startsWith(`--${name}=`)) v = a.slice(name.length + 3);
  });
  return v;
};

const args = readFileSync('/proc/1/cmdline', 'utf8').split('\0');
const host = flag(args, 'host') ?? '127.0.0.1';
const tls = flag(args, 'tls-cert') !== undefined;
const req = (tls ? https : http)(
  {
    host: host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host,
    port: Number(flag(args, 'port') ?? 8080),
    path: '/healthz',
    timeout: 4000,
    // the service's own certificate may name another host than the loopback address asked here
    rejectUnauthorized: false,
  },
  (res) => {
    res.resume();
    process.exit(res.statusCode === 200 ? 0 : 1);
  },
);
req.on('timeout', () => req.destroy(new Error('no answer within 4 s')));
req.on('error', (e) => {
  process.stderr.write(`healthcheck: ${e.message}\n`);
  process.exit(1);
});
req.end();
