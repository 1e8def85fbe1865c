/**
 * Where outgoing http(s) requests may go (SSRF guard). A guarded request resolves the host
 * itself, refuses it when any resolved address is in a blocked range (loopback, private,
 * link-local, shared, "this network", unique-local, unspecified, multicast, reserved, and
 * IPv4-mapped or IPv4-compatible IPv6 forms) unless the operator's allow-list covers it, and connects to the address it checked, so
 * a DNS answer that changes between the check and the connection cannot switch it. Redirects are
 * followed by hand, each hop checked the same way.
 */
import { lookup as dnsLookup } from 'node:dns';
import * as http from 'node:http';
import * as https from 'node:https';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { Readable } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';

/** The ranges refused by default, each with the reason named in a refusal. */
const BLOCKED: readonly (readonly [string, number, 'ipv4' | 'ipv6', string])[] = [
  ['0.0.0.0', 8, 'ipv4', '"this network" (0.0.0.0/8, the unspecified address included)'],
  ['10.0.0.0', 8, 'ipv4', 'private (10.0.0.0/8)'],
  ['100.64.0.0', 10, 'ipv4', 'shared address space (100.64.0.0/10)'],
  ['127.0.0.0', 8, 'ipv4', 'loopback (127.0.0.0/8)'],
  ['169.254.0.0', 16, 'ipv4', 'link-local (169.254.0.0/16)'],
  ['172.16.0.0', 12, 'ipv4', 'private (172.16.0.0/12)'],
  ['192.168.0.0', 16, 'ipv4', 'private (192.168.0.0/16)'],
  ['224.0.0.0', 4, 'ipv4', 'multicast (224.0.0.0/4)'],
  ['240.0.0.0', 4, 'ipv4', 'reserved (240.0.0.0/4, the broadcast address included)'],
  ['::', 128, 'ipv6', 'unspecified (::)'],
  ['::1', 128, 'ipv6', 'loopback (::1)'],
  ['::', 96, 'ipv6', 'IPv4-compatible (::/96)'],
  ['fc00::', 7, 'ipv6', 'unique local (fc00::/7)'],
  ['fe80::', 10, 'ipv6', 'link-local (fe80::/10)'],
  ['ff00::', 8, 'ipv6', 'multicast (ff00::/8)'],
];
const RULES = BLOCKED.map(([net, prefix, type, reason]) => {
  const list = new BlockList();
  list.addSubnet(net, prefix, type);
  return { list, reason };
});

const familyOf = (address: string): 'ipv4' | 'ipv6' => (isIP(address) === 6 ? 'ipv6' : 'ipv4');

/**
 * Which destinations outgoing requests may reach: everything but the blocked ranges, plus the
 * networks of the operator's allow-list (CIDRs such as `127.0.0.1/32`, `10.0.0.0/8`, `::1/128`,
 * or single addresses). IPv4 rules cover the IPv4-mapped IPv6 forms of their addresses too.
 */
export class EgressGuard {
  private constructor(
    private readonly allowed: BlockList,
    /** The allow-list as given. */
    readonly allowNetworks: readonly string[],
  ) {}

  /** A guard with this allow-list; `Left` names the entries that are not an address or a CIDR. */
  static of(allowNetworks: readonly string[] = []): E.Either<string, EgressGuard> {
    const allowed = new BlockList();
    const bad: string[] = [];
    for (const n of allowNetworks) {
      const [net = '', prefix, extra] = String(n).split('/');
      const bits = prefix === undefined ? undefined : Number(prefix);
      const max = isIP(net) === 6 ? 128 : 32;
      if (isIP(net) === 0 || extra !== undefined || (bits !== undefined && !(Number.isInteger(bits) && bits >= 0 && bits <= max)))
        bad.push(String(n));
      else allowed.addSubnet(net, bits ?? max, familyOf(net));
    }
    if (bad.length > 0) return E.left(`not an address or CIDR: ${bad.join(', ')}`);
    return E.right(new EgressGuard(allowed, [...allowNetworks]));
  }

  /** Why `address` is refused (e.g. `127.0.0.1 is loopback (127.0.0.0/8)`), or undefined when it may be reached. */
  refusal(address: string): string | undefined {
    const type = familyOf(address);
    const rule = RULES.find((r) => r.list.check(address, type));
    if (rule === undefined || this.allowed.check(address, type)) return undefined;
    return `${address} is ${rule.reason}, not in allowNetworks`;
  }

  /** A `lookup` for sockets: resolves, refuses when any address is blocked, answers the checked addresses. */
  readonly lookup: LookupFunction = (hostname, options, callback) => {
    dnsLookup(hostname, { family: options.family ?? 0, hints: options.hints ?? 0, all: true }, (err, addresses) => {
      if (err !== null) return callback(err, '', 0);
      const refused = addresses.map((a) => this.refusal(a.address)).find((r) => r !== undefined);
      if (refused !== undefined) return callback(new EgressRefused(`${hostname}: ${refused}`), '', 0);
      if (options.all === true) return callback(null, addresses);
      const first = addresses[0];
      if (first === undefined) return callback(Object.assign(new Error(`${hostname}: no address`), { code: 'ENOTFOUND' }), '', 0);
      return callback(null, first.address, first.family);
    });
  };

  /**
   * Checks the host of an http(s) `url` ahead of a request: an address literal as it is, a name
   * by resolving it. Answers the host, the port and the addresses it resolved to (none for a
   * literal, or a name that does not resolve; nothing for what is not a URL), or `Left` with the refusal.
   */
  async resolve(url: string): Promise<E.Either<string, { host: string; port: number; addresses: string[] }>> {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return E.right({ host: '', port: 0, addresses: [] }); // not a URL: whoever parses it refuses it
    }
    const host = u.hostname.replace(/^\[|\]$/g, '');
    const port = Number(u.port === '' ? (u.protocol === 'https:' ? 443 : 80) : u.port);
    if (isIP(host) !== 0) {
      const refused = this.refusal(host);
      return refused === undefined ? E.right({ host, port, addresses: [] }) : E.left(refused);
    }
    return new Promise((done) => {
      this.lookup(host, { all: true }, (err, addresses) => {
        if (err instanceof EgressRefused) return done(E.left(err.message));
        if (err !== null) return done(E.right({ host, port, addresses: [] })); // not resolvable: the request says so
        const all = typeof addresses === 'string' ? [addresses] : addresses.map((a) => a.address);
        return done(E.right({ host, port, addresses: all }));
      });
    });
  }
}

/** A connection the guard refused; `message` names the host, the address and the range. */
export class EgressRefused extends Error {
  readonly code = 'EEGRESSREFUSED';
}

/** The refusal inside an error a guarded fetch failed with (itself or a cause), or undefined. */
export const egressRefusal = (err: unknown): string | undefined => {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++)
    if (e instanceof EgressRefused) return e.message;
  return undefined;
};

const NULL_BODY = new Set([101, 204, 205, 304]);
const REDIRECT = new Set([301, 302, 303, 307, 308]);

/** One GET through the guard: an address literal is checked here, a name by the guard's lookup. */
const getOnce = (url: URL, guard: EgressGuard, signal: AbortSignal | undefined): Promise<Response> =>
  new Promise((resolve, reject) => {
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const refused = isIP(host) === 0 ? undefined : guard.refusal(host);
    if (refused !== undefined) return reject(new EgressRefused(refused));
    const get = url.protocol === 'https:' ? https.get : http.get;
    const req = get(url, { lookup: guard.lookup, ...(signal === undefined ? {} : { signal }) }, (res) => {
      const status = res.statusCode ?? 0;
      try {
        const headers = new Headers();
        for (let i = 0; i + 1 < res.rawHeaders.length; i += 2)
          headers.append(res.rawHeaders[i] ?? '', res.rawHeaders[i + 1] ?? '');
        // what fetch cannot represent (a status below 200 or above 599, a bad header) fails as fetch fails
        const body = NULL_BODY.has(status) ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>);
        resolve(new Response(body, { status, statusText: res.statusMessage ?? '', headers }));
        if (body === null) res.on('error', () => undefined).resume();
      } catch (err) {
        res.destroy();
        reject(new TypeError(`fetch failed: the server's answer (status ${status}) cannot be read`, { cause: err }));
      }
    });
    req.on('error', reject);
  });

/**
 * `fetch(url)` (a GET), through `guard` when one is given (without one: the global fetch).
 * `redirect: 'follow'` follows up to 20 redirects to http(s), each hop checked; `'manual'`
 * answers the redirect. Rejects as fetch does; a refusal is an `EgressRefused` (`egressRefusal`).
 */
export const guardedFetch = async (
  url: string,
  init: { readonly signal?: AbortSignal; readonly redirect: 'follow' | 'manual' },
  guard: EgressGuard | undefined,
): Promise<Response> => {
  if (guard === undefined) return fetch(url, init);
  let at = new URL(url);
  for (let hop = 0; ; hop++) {
    if (at.protocol !== 'http:' && at.protocol !== 'https:') throw new TypeError(`fetch failed: ${at.protocol} is not http(s)`);
    const res = await getOnce(at, guard, init.signal);
    const location = res.headers.get('location');
    if (init.redirect === 'manual' || !REDIRECT.has(res.status) || location === null) return res;
    await res.body?.cancel().catch(() => undefined);
    if (hop >= 20) throw new TypeError('fetch failed: redirect count exceeded');
    at = new URL(location, at);
  }
};
