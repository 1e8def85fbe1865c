// The code blocks of the project's Markdown (README.md, packages/*/README.md, docs/*.md), as the
// snippet tests read them: every fenced block with a language is a snippet.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const root = join(import.meta.dirname, '..');

/** One fenced code block: where it is, its language and its text. */
export interface Snippet {
  readonly file: string;
  readonly line: number;
  readonly lang: string;
  readonly code: string;
  /** A file-name-safe unique name, e.g. `docs_pool_md_L12`. */
  readonly name: string;
}

/** The Markdown files whose code blocks are tested. */
export const markdownFiles = (): string[] => [
  'README.md',
  ...readdirSync(join(root, 'packages'))
    .map((p) => join('packages', p, 'README.md'))
    .filter((f) => exists(f)),
  ...readdirSync(join(root, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => join('docs', f)),
];

const exists = (file: string): boolean => {
  try {
    readFileSync(join(root, file));
    return true;
  } catch {
    return false;
  }
};

/** Every fenced block with a language in `file` (bare fences are sample output, not code). */
export const snippetsOf = (file: string): Snippet[] => {
  const md = readFileSync(join(root, file), 'utf8');
  const out: Snippet[] = [];
  for (const m of md.matchAll(/^```(\w+)\n([\s\S]*?)^```$/gm)) {
    const line = md.slice(0, m.index).split('\n').length;
    const lang = m[1] ?? '';
    out.push({ file, line, lang, code: m[2] ?? '', name: `${file.replace(/[/.-]/g, '_')}_L${line}` });
  }
  return out;
};

/** Every snippet of every tested Markdown file. */
export const allSnippets = (): Snippet[] => markdownFiles().flatMap(snippetsOf);
