#!/usr/bin/env node
// Structure figures of packages/*/src: long functions, `as` casts, `any`, import cycles,
// registry reads from the service and CLI, and references to documents outside the repository.
// `node scripts/metrics.mjs` prints them; `--json` prints them as JSON; `--check` exits 1 when a
// budget of docs/architecture.md ("Keeping the house") is exceeded.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';

const root = resolve(dirname(new URL(import.meta.url).pathname), '..');

/** The budgets the structure is held to. */
export const budgets = {
  over80: 0,
  over60: 5,
  castsPer1000: 8,
  any: 0,
  cycles: 0,
  registryReads: 0,
  outsideRefs: 0,
};

function sourceFiles() {
  const out = [];
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (path.endsWith('.ts') && !path.endsWith('.d.ts')) out.push(path);
    }
  };
  for (const pkg of readdirSync(join(root, 'packages'))) {
    const src = join(root, 'packages', pkg, 'src');
    try {
      walk(src);
    } catch {
      // a package without src
    }
  }
  return out.sort();
}

const isCaseTable = (file) => /-cases\.ts$/.test(file);

function functionName(node) {
  if (node.name && ts.isIdentifier(node.name)) return node.name.text;
  if (node.name && ts.isStringLiteral(node.name)) return node.name.text;
  const parent = node.parent;
  if (parent && ts.isVariableDeclaration(parent) && ts.isIdentifier(parent.name)) return parent.name.text;
  if (parent && ts.isPropertyAssignment(parent) && ts.isIdentifier(parent.name)) return parent.name.text;
  if (ts.isConstructorDeclaration(node)) return 'constructor';
  return '<anonymous>';
}

function importsOf(file, sf) {
  const out = [];
  const add = (spec) => {
    if (!spec.startsWith('.')) return;
    const target = resolve(dirname(file), spec.replace(/\.js$/, '.ts'));
    out.push(target);
  };
  for (const st of sf.statements) {
    if (
      (ts.isImportDeclaration(st) || ts.isExportDeclaration(st)) &&
      st.moduleSpecifier &&
      ts.isStringLiteral(st.moduleSpecifier)
    )
      add(st.moduleSpecifier.text);
  }
  return out;
}

function cyclesOf(graph) {
  // Tarjan's strongly connected components; a component of more than one file is a cycle.
  let index = 0;
  const stack = [];
  const meta = new Map();
  const out = [];
  const visit = (v) => {
    meta.set(v, { index, low: index, on: true });
    index++;
    stack.push(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!meta.has(w)) {
        visit(w);
        meta.get(v).low = Math.min(meta.get(v).low, meta.get(w).low);
      } else if (meta.get(w).on) meta.get(v).low = Math.min(meta.get(v).low, meta.get(w).index);
    }
    if (meta.get(v).low === meta.get(v).index) {
      const comp = [];
      let w;
      do {
        w = stack.pop();
        meta.get(w).on = false;
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1 || (graph.get(v) ?? []).includes(v)) out.push(comp);
    }
  };
  for (const v of graph.keys()) if (!meta.has(v)) visit(v);
  return out;
}

/** Measures packages/*\/src and answers the figures. */
export function measure() {
  const files = sourceFiles();
  const functions = [];
  let lines = 0;
  let casts = 0;
  let anys = 0;
  const castsByFile = new Map();
  const graph = new Map();
  const registryReads = [];
  const outsideRefs = [];
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    const rel = relative(root, file);
    lines += text.split('\n').length;
    const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
    graph.set(file, importsOf(file, sf));
    const lineOf = (pos) => sf.getLineAndCharacterOfPosition(pos).line + 1;
    const visit = (node) => {
      if (
        ts.isFunctionDeclaration(node) ||
        ts.isFunctionExpression(node) ||
        ts.isArrowFunction(node) ||
        ts.isMethodDeclaration(node) ||
        ts.isConstructorDeclaration(node) ||
        ts.isGetAccessorDeclaration(node)
      ) {
        const start = lineOf(node.getStart(sf));
        const length = lineOf(node.getEnd()) - start + 1;
        if (!isCaseTable(file)) functions.push({ file: rel, line: start, name: functionName(node), length });
      }
      if (
        (ts.isAsExpression(node) || ts.isTypeAssertionExpression(node)) &&
        !(ts.isTypeReferenceNode(node.type) && node.type.typeName.getText(sf) === 'const')
      ) {
        casts++;
        castsByFile.set(rel, (castsByFile.get(rel) ?? 0) + 1);
      }
      if (node.kind === ts.SyntaxKind.AnyKeyword) anys++;
      if (/packages\/(service|cli)\//.test(rel) && ts.isPropertyAccessExpression(node) && node.name.text === 'registry')
        registryReads.push(`${rel}:${lineOf(node.getStart(sf))}`);
      ts.forEachChild(node, visit);
    };
    visit(sf);
    text.split('\n').forEach((l, i) => {
      if (/DESIGN\.md|\.\.\/shared|seeds\//.test(l)) outsideRefs.push(`${rel}:${i + 1}`);
    });
  }
  const cycles = cyclesOf(graph).map((c) => c.map((f) => relative(root, f)).sort());
  functions.sort((a, b) => b.length - a.length);
  return {
    files: files.length,
    lines,
    functionsOver80: functions.filter((f) => f.length > 80),
    functionsOver60: functions.filter((f) => f.length > 60),
    casts,
    castsPer1000: Math.round((casts / lines) * 10000) / 10,
    castsByFile: [...castsByFile].sort((a, b) => b[1] - a[1]),
    any: anys,
    cycles,
    registryReads,
    outsideRefs,
  };
}

/** The budgets a measure exceeds, as sentences (empty when none). */
export function overBudget(m) {
  const out = [];
  if (m.functionsOver80.length > budgets.over80) out.push(`${m.functionsOver80.length} functions over 80 lines`);
  if (m.functionsOver60.length > budgets.over60)
    out.push(`${m.functionsOver60.length} functions over 60 lines (at most ${budgets.over60})`);
  if (m.castsPer1000 > budgets.castsPer1000)
    out.push(`${m.castsPer1000} casts per 1,000 lines (at most ${budgets.castsPer1000})`);
  if (m.any > budgets.any) out.push(`${m.any} uses of any`);
  if (m.cycles.length > budgets.cycles) out.push(`${m.cycles.length} import cycles`);
  if (m.registryReads.length > budgets.registryReads)
    out.push(`${m.registryReads.length} registry reads from the service or CLI`);
  if (m.outsideRefs.length > budgets.outsideRefs)
    out.push(`${m.outsideRefs.length} references to documents outside the repository`);
  return out;
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname)) {
  const m = measure();
  if (process.argv.includes('--json')) console.log(JSON.stringify(m, null, 2));
  else {
    console.log(`files ${m.files}, lines ${m.lines}`);
    console.log(`functions over 80 lines: ${m.functionsOver80.length}`);
    console.log(`functions over 60 lines: ${m.functionsOver60.length}`);
    for (const f of m.functionsOver60) console.log(`  ${f.length}\t${f.file}:${f.line} ${f.name}`);
    console.log(`as casts: ${m.casts} (${m.castsPer1000} per 1,000 lines)`);
    for (const [f, n] of m.castsByFile.slice(0, 15)) console.log(`  ${n}\t${f}`);
    console.log(`any: ${m.any}`);
    console.log(`import cycles: ${m.cycles.length}`);
    for (const c of m.cycles) console.log(`  ${c.join(' <-> ')}`);
    console.log(`registry reads from service/cli: ${m.registryReads.length}`);
    console.log(`references outside the repo: ${m.outsideRefs.length}`);
  }
  if (process.argv.includes('--check')) {
    const over = overBudget(m);
    for (const o of over) console.error(`over budget: ${o}`);
    process.exit(over.length ? 1 : 0);
  }
}
