// docs/api.md's options table is the options' one declaration (lib/options.ts), rendered.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { optionsTable, resolveOptions } from '../../lib/options';

const API_MD = path.resolve(__dirname, '../../docs/api.md');

/** The table between the markers that `npm run docs:options` writes between. */
function documentedTable(): string {
  const text = fs.readFileSync(API_MD, 'utf8');
  const match = /<!-- options-table:begin -->\n([\s\S]*?)\n<!-- options-table:end -->/.exec(text);
  if (!match) throw new Error('docs/api.md has no options-table markers');
  return match[1];
}

describe('the options table', () => {
  it('in docs/api.md is the one generated from the declaration (npm run docs:options)', () => {
    expect(documentedTable()).toBe(optionsTable());
  });

  it('has one row per option that the loss accepts, and no other', () => {
    const documented = [...documentedTable().matchAll(/^\| `(\w+)` \|/gm)].map((m) => m[1]);
    const resolved = Object.keys(resolveOptions({ inChannels: 1 }, 0).options);
    expect(new Set(documented)).toEqual(new Set(resolved));
    expect(documented).toHaveLength(resolved.length);
  });

  it('is the only options table in the README and the docs', () => {
    const files = ['README.md', ...fs.readdirSync(path.dirname(API_MD)).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
    const tables = files.filter((f) => /^\| option \|/m.test(fs.readFileSync(path.resolve(__dirname, '../..', f), 'utf8')));
    expect(tables).toEqual(['docs/api.md']);
  });
});
