/**
 * Reading a stack file (`lessl up -f lessl.yml`): YAML parsed with positions, validated against
 * the service's `STACK_SCHEMA` (ajv) before anything is sent. Each problem names the line and
 * column of the offending node and the field (its dotted path), as `lessl.yml:12:7: field: why`.
 */
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import { isMap, isScalar, LineCounter, parseDocument, type Document } from 'yaml';
import { STACK_SCHEMA, StackC, type Stack } from '@lessl/service/stack';
import type { ValidationError } from 'io-ts';
import { clientProblem, LesslError } from './client.js';
import { field, messageOf } from './unknown.js';

/** One thing wrong with a stack file. */
export interface StackProblem {
  /** 1-based. */
  readonly line: number;
  readonly col: number;
  /** The field, as a dotted path (`functions.hello.limits.memory`); '' for the file. */
  readonly field: string;
  readonly message: string;
}

/** A stack file's text read: its stack, or what is wrong with it. */
export type StackRead = { readonly ok: true; readonly stack: Stack } | { readonly ok: false; readonly problems: StackProblem[] };

let compiled: ValidateFunction | undefined;
/** The stack schema's validator (compiled once). */
const validator = (): ValidateFunction => {
  compiled ??= new Ajv2020({ allErrors: true, discriminator: true, verbose: true }).compile(STACK_SCHEMA);
  return compiled;
};

/** A JSON pointer's segments. */
const segments = (pointer: string): string[] =>
  pointer === ''
    ? []
    : pointer
        .slice(1)
        .split('/')
        .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));

type Pos = { line: number; col: number };

/** Where the node at `path` starts (the nearest existing ancestor when it is missing); with `key`, where that key of it is. */
const positionOf = (doc: Document, lc: LineCounter, path: readonly string[], key?: string): Pos => {
  for (let n = path.length; n >= 0; n--) {
    const node: unknown = doc.getIn(path.slice(0, n), true);
    if (node === undefined && n > 0) continue;
    const target =
      key !== undefined && n === path.length && isMap(node)
        ? node.items.find((p) => isScalar(p.key) && String(p.key.value) === key)?.key
        : node;
    const range = isScalar(target) || isMap(target) ? target.range : (doc.contents?.range ?? undefined);
    return lc.linePos(range?.[0] ?? 0);
  }
  return { line: 1, col: 1 };
};

/** The sub-schema an error names, as far as its message needs it. */
const requiredOf = (u: unknown): string[] =>
  typeof u === 'object' && u !== null && 'required' in u && Array.isArray(u.required) ? u.required.map(String) : [];

/** The values a discriminated union's tag takes (its branches' `const`s). */
const tagsOf = (schema: unknown): string[] => {
  const branches = field(schema, 'oneOf');
  const tag = field(field(schema, 'discriminator'), 'propertyName');
  if (!Array.isArray(branches) || typeof tag !== 'string') return [];
  return branches.map((b) => String(field(field(field(b, 'properties'), tag), 'const')));
};

/** A person's message for an ajv error. */
const messageOfError = (e: ErrorObject): string => {
  const p: Record<string, unknown> = e.params;
  switch (e.keyword) {
    case 'pattern':
      return e.propertyName === undefined
        ? (e.message ?? 'is not valid')
        : 'is not a name: lower-case letters, digits, . _ - (at most 64)';
    case 'additionalProperties':
      return `unknown field ${String(p['additionalProperty'])}`;
    case 'required':
      return `missing field ${String(p['missingProperty'])}`;
    case 'anyOf':
      return `needs ${(Array.isArray(e.schema) ? e.schema : []).flatMap(requiredOf).join(' or ')}`;
    case 'not':
      return `give only one of ${requiredOf(e.schema).join(', ')}`;
    case 'enum':
      return `must be one of ${(Array.isArray(p['allowedValues']) ? p['allowedValues'] : []).map(String).join(', ')}`;
    case 'const':
      return `must be ${JSON.stringify(p['allowedValue'])}`;
    case 'discriminator':
      return `must be one of ${tagsOf(e.parentSchema).join(', ')}`;
    default:
      return e.instancePath === '' && e.keyword === 'type'
        ? 'a stack file is a map: version: 1, images, functions'
        : (e.message ?? 'is not valid');
  }
};

/** A problem for one ajv error; the field of `additionalProperties` and `required` is the key itself. */
const problemOf = (doc: Document, lc: LineCounter, e: ErrorObject): StackProblem => {
  const path = segments(e.instancePath);
  const p: Record<string, unknown> = e.params;
  const keyOf: Readonly<Record<string, unknown>> = {
    additionalProperties: p['additionalProperty'],
    required: p['missingProperty'],
    discriminator: p['tag'],
  };
  const named = e.propertyName ?? keyOf[e.keyword];
  const key = named === undefined ? undefined : String(named);
  const pos = positionOf(doc, lc, path, e.keyword === 'required' ? undefined : key);
  return { ...pos, field: [...path, ...(key === undefined ? [] : [key])].join('.'), message: messageOfError(e) };
};

/** The schema's problems with a parsed document (the sub-errors of `anyOf` branches folded into it). */
const schemaProblems = (doc: Document, lc: LineCounter, value: unknown): StackProblem[] => {
  const v = validator();
  if (v(value)) return [];
  const errors = (v.errors ?? []).filter((e) => !e.schemaPath.includes('/anyOf/') && e.keyword !== 'propertyNames');
  const byKey = new Map<string, StackProblem>();
  for (const p of errors.map((e) => problemOf(doc, lc, e))) byKey.set(`${p.line}:${p.col}:${p.field}:${p.message}`, p);
  return [...byKey.values()];
};

/** What the codec finds that the schema cannot say (a function's min_containers above its max_containers). */
const codecProblems = (doc: Document, lc: LineCounter, errors: readonly ValidationError[]): StackProblem[] =>
  errors.map((e) => {
    const path = e.context.map((x) => x.key).filter((k) => k !== '');
    const rule = e.context.at(-1)?.type.name ?? 'the stack file format';
    return { ...positionOf(doc, lc, path), field: path.join('.'), message: e.message ?? `must satisfy: ${rule}` };
  });

/** Parses and validates a stack file's text. */
export const parseStack = (text: string): StackRead => {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, uniqueKeys: true });
  if (doc.errors.length > 0)
    return {
      ok: false,
      problems: doc.errors.map((e) => {
        const at = e.linePos?.[0] ?? { line: 1, col: 1 };
        return {
          line: at.line,
          col: at.col,
          field: '',
          message: (e.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, ''),
        };
      }),
    };
  const value: unknown = doc.toJS();
  const problems = schemaProblems(doc, lc, value);
  if (problems.length > 0) return { ok: false, problems: problems.sort((a, b) => a.line - b.line || a.col - b.col) };
  const d = StackC.decode(value);
  return d._tag === 'Left' ? { ok: false, problems: codecProblems(doc, lc, d.left) } : { ok: true, stack: d.right };
};

/** A problem as a line: `file:line:col: field: message`. */
export const formatProblem = (file: string, p: StackProblem): string =>
  `${file}:${p.line}:${p.col}: ${p.field === '' ? '' : `${p.field}: `}${p.message}`;

/** A stack file read from disk: its stack, with relative `path` sources resolved against the file's directory. */
export interface LoadedStack {
  readonly file: string;
  readonly stack: Stack;
}

/** Reads and validates a stack file; a file that cannot be read or is not valid throws an `InvalidEntry` listing its problems. */
export const loadStack = async (file: string): Promise<LoadedStack> => {
  const text = await readFile(file, 'utf8').catch((e: unknown) => {
    throw new LesslError(clientProblem('NotFound', `cannot read ${file}: ${messageOf(e)}`, 0, ['file']));
  });
  const r = parseStack(text);
  if (!r.ok) {
    const lines = r.problems.slice(0, 20).map((p) => formatProblem(file, p));
    const keys = [...new Set(r.problems.map((p) => p.field).filter((f) => f !== ''))];
    throw new LesslError(
      clientProblem('InvalidEntry', `${file} is not a valid stack file; nothing was applied:\n  ${lines.join('\n  ')}`, 0, keys),
    );
  }
  return { file, stack: resolvePaths(r.stack, dirname(resolve(file))) };
};

/** The stack with relative `path` sources (and relative git repositories) made absolute against `dir`. */
const resolvePaths = (stack: Stack, dir: string): Stack => {
  const images = Object.fromEntries(
    Object.entries(stack.images ?? {}).map(([name, img]) => {
      const s = img.source;
      if (s.type === 'path' && !isAbsolute(s.path)) return [name, { ...img, source: { ...s, path: resolve(dir, s.path) } }];
      if (s.type === 'git' && /^\.\.?\//.test(s.repo)) return [name, { ...img, source: { ...s, repo: resolve(dir, s.repo) } }];
      return [name, img];
    }),
  );
  return { ...stack, ...(stack.images === undefined ? {} : { images }) };
};
