// The README's training loop runs as it stands, saved as train.mjs next to an installed package
// (here: this repository's dist/, by the package's name and exports), and does what the README
// says it does: the loss falls from about the stated value to under the stated one.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');
const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');

/** The first ```ts block of the README's section `heading`. */
function firstBlockOf(heading: string): string {
  const start = README.indexOf(`\n## ${heading}\n`);
  if (start < 0) throw new Error(`the README has no section "## ${heading}"`);
  const end = README.indexOf('\n## ', start + 1);
  const block = /^```ts\n([\s\S]*?)^```$/m.exec(README.slice(start, end < 0 ? undefined : end));
  if (!block) throw new Error(`the README's section "${heading}" has no \`\`\`ts block`);
  return block[1];
}

describe("the README's training loop", () => {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-readme-loop-'));
  afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));
  let losses: number[] = [];

  beforeAll(() => {
    fs.mkdirSync(path.join(scratch, 'node_modules'));
    fs.symlinkSync(ROOT, path.join(scratch, 'node_modules', 'generic-perceptual-loss'));
    fs.writeFileSync(path.join(scratch, 'train.mjs'), firstBlockOf('A training loop'));
    const out = execFileSync(process.execPath, ['train.mjs'], { cwd: scratch, encoding: 'utf8' });
    losses = [...out.matchAll(/^step \d+: perceptual loss ([0-9.]+)$/gm)].map((m) => Number(m[1]));
  }, 120_000);

  it('runs with node as train.mjs and prints the loss as it goes', () => {
    expect(losses.length).toBeGreaterThanOrEqual(2);
  });

  it('starts at about the loss the README states (within 10%)', () => {
    const stated = Number(/The loss falls from about ([0-9.]+) to under ([0-9.]+)/.exec(README)![1]);
    expect(Math.abs(losses[0] - stated) / stated).toBeLessThan(0.1);
  });

  it('ends under the loss the README states', () => {
    const stated = Number(/The loss falls from about ([0-9.]+) to under ([0-9.]+)/.exec(README)![2]);
    expect(losses[losses.length - 1]).toBeLessThan(stated);
  });
});
