// The README's and the docs' links work, in the repository and in the published package (issue
// 23: the package shipped without docs/api.md, which the README calls the reference). A relative
// link must name a file of the repository, its #anchor a heading of that file; a link from the
// README or from a doc that ships must name a file that `npm pack` packs, since npm shows the
// README and the tarball holds the rest. Links into this repository on GitHub must name a path it
// has. Links are read outside code blocks and code spans: Markdown links and images, and HTML
// <img src> and <a href>.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  repository: { type: string; url: string };
  homepage: string;
  bugs: { url: string };
};
/** https://github.com/OWNER/NAME, from package.json's repository field. */
const REPO_URL = pkg.repository.url.replace(/^git\+/, '').replace(/\.git$/, '');

/** README.md and every .md under docs/, as paths relative to the repository. */
function markdownFiles(): string[] {
  const docs = fs
    .readdirSync(path.join(ROOT, 'docs'), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.md'))
    .map((f) => path.posix.join('docs', f.split(path.sep).join('/')));
  return ['README.md', ...docs.sort()];
}

/** A Markdown text without its fenced code blocks and code spans (their brackets are not links). */
function withoutCode(text: string): string {
  return text.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '').replace(/(`+)[^`\n]*?\1/g, '');
}

interface Link {
  file: string;
  target: string;
}

/** Every link target of a Markdown file. */
function linksOf(file: string): Link[] {
  const text = withoutCode(fs.readFileSync(path.join(ROOT, file), 'utf8'));
  const targets = [
    ...[...text.matchAll(/!?\[(?:[^\]\n]|\n(?!\n))*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)].map((m) => m[1]),
    ...[...text.matchAll(/<(?:img|a)\s[^>]*?(?:src|href)\s*=\s*["']([^"']+)["']/gi)].map((m) => m[1]),
  ];
  return targets.map((target) => ({ file, target }));
}

const isRelative = (target: string) => !/^[a-z][a-z0-9+.-]*:/i.test(target) && !target.startsWith('//');

/** The repository path a relative link names ('' path: the file itself), and its anchor. */
function resolve(link: Link): { file: string; anchor: string | undefined } {
  const [rawPath, anchor] = link.target.split('#', 2) as [string, string | undefined];
  const decoded = decodeURIComponent(rawPath);
  const file = decoded === '' ? link.file : path.posix.normalize(path.posix.join(path.posix.dirname(link.file), decoded)).replace(/\/$/, '');
  return { file, anchor };
}

/** GitHub's anchors for the headings of a Markdown file (outside code blocks), repeats numbered. */
function anchorsOf(file: string): Set<string> {
  const text = fs.readFileSync(path.join(ROOT, file), 'utf8').replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '');
  const seen = new Map<string, number>();
  const anchors = new Set<string>();
  for (const m of text.matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const slug = m[1]
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    anchors.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return anchors;
}

const ALL = markdownFiles().flatMap(linksOf);
const RELATIVE = ALL.filter((l) => isRelative(l.target));

describe('relative links in README.md and docs/**/*.md', () => {
  it('are found (the extraction sees the README links to docs/api.md)', () => {
    expect(RELATIVE.filter((l) => l.file === 'README.md').map((l) => resolve(l).file)).toContain('docs/api.md');
  });

  it('each name a file or folder of the repository', () => {
    const missing = RELATIVE.filter((l) => !fs.existsSync(path.join(ROOT, resolve(l).file))).map((l) => `${l.file}: ${l.target}`);
    expect(missing).toEqual([]);
  });

  it("each #anchor names a heading of the Markdown file it points into", () => {
    const broken = RELATIVE.filter((l) => {
      const { file, anchor } = resolve(l);
      return anchor !== undefined && file.endsWith('.md') && fs.existsSync(path.join(ROOT, file)) && !anchorsOf(file).has(anchor);
    }).map((l) => `${l.file}: ${l.target}`);
    expect(broken).toEqual([]);
  });
});

describe("links into this repository on GitHub (package.json's repository)", () => {
  it('each name a path the repository has, on main', () => {
    const prefix = new RegExp(`^${REPO_URL.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/(?:blob|tree)/main/([^#?]+)`);
    const missing = ALL.map((l) => ({ l, m: prefix.exec(l.target) }))
      .filter(({ m }) => m && !fs.existsSync(path.join(ROOT, decodeURIComponent(m[1]))))
      .map(({ l }) => `${l.file}: ${l.target}`);
    expect(missing).toEqual([]);
  });
});

describe('package.json names the repository', () => {
  it('repository: a git URL of github.com', () => {
    expect(pkg.repository.type).toBe('git');
    expect(pkg.repository.url).toMatch(/^git\+https:\/\/github\.com\/[\w.-]+\/[\w.-]+\.git$/);
  });

  it('homepage and bugs: that repository', () => {
    expect(pkg.homepage).toBe(`${REPO_URL}#readme`);
    expect(pkg.bugs.url).toBe(`${REPO_URL}/issues`);
  });
});

describe('the packed package (npm pack --dry-run)', () => {
  let packed: { size: number; files: Set<string> };

  beforeAll(() => {
    const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const [report] = JSON.parse(out) as Array<{ size: number; files: Array<{ path: string }> }>;
    packed = { size: report.size, files: new Set(report.files.map((f) => f.path)) };
  }, 120_000);

  it('holds the README and every doc that a relative link of the README or of a packed doc names, and what those link', () => {
    const shipped = markdownFiles().filter((f) => packed.files.has(f));
    expect(shipped).toContain('README.md');
    const missing = shipped
      .flatMap(linksOf)
      .filter((l) => isRelative(l.target))
      .map((l) => ({ l, file: resolve(l).file }))
      .filter(({ file }) => !packed.files.has(file) && ![...packed.files].some((f) => f.startsWith(`${file}/`)))
      .map(({ l }) => `${l.file}: ${l.target}`);
    expect(missing).toEqual([]);
  });

  it('is a tarball under 1 MB', () => {
    expect(packed.size).toBeLessThan(1_000_000);
  });

  it('is said to be under 1 MB by the README (its only statement of the size)', () => {
    expect(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')).toMatch(/\(under 1 MB\)/);
  });
});
