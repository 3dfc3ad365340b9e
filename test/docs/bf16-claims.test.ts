// The README's bfloat16 claims, the tests' bounds and the recorded figures agree (issue 23): the
// bounds the README states are the constants the bf16 tests use; the newest recording of
// bench/bf16-accuracy.js lies inside them for independent inputs; and the figures the README quotes
// are that recording's, rounded outwards to two significant digits.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');
const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');

/** A numeric constant `const NAME = value;` of a test file, which must be there. */
function constantOf(file: string, name: string): number {
  const text = fs.readFileSync(path.join(ROOT, file), 'utf8');
  const match = new RegExp(`^const ${name} = ([0-9.e+-]+);`, 'm').exec(text);
  if (!match) throw new Error(`${file} has no \`const ${name} = <number>;\``);
  return Number(match[1]);
}

/** The first number the README writes after `prefix` (a literal), as written. */
function readmeNumber(prefix: string): string {
  const escaped = prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/ /g, '\\s+');
  const match = new RegExp(`${escaped}\\s*\\**([0-9](?:[0-9.e+-]*[0-9])?)\\**`).exec(README);
  if (!match) throw new Error(`the README has no number after "${prefix}"`);
  return match[1];
}

interface Summary {
  maxLossRelError: number;
  maxGradRelL2: number;
  minGradRelL2: number;
  minGradCosine: number;
}
type Inputs = 'independent' | 'near';

/** The newest bench/results/bf16-accuracy-DATE.json and its file name. */
function newestRecording(): { file: string; summary: Record<string, Record<Inputs, Summary>> } {
  const dir = path.join(ROOT, 'bench', 'results');
  const files = fs.readdirSync(dir).filter((f) => /^bf16-accuracy-\d{4}-\d{2}-\d{2}\.json$/.test(f)).sort();
  if (files.length === 0) throw new Error('no bench/results/bf16-accuracy-DATE.json: run node bench/bf16-accuracy.js');
  const file = files[files.length - 1];
  return { file, summary: (JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as { summary: Record<string, Record<Inputs, Summary>> }).summary };
}

/** Over every libtorch route of the recording. */
function across(inputs: Inputs, pick: (s: Summary) => number, combine: (...xs: number[]) => number): number {
  return combine(...Object.values(newestRecording().summary).map((route) => pick(route[inputs])));
}

/** x rounded to two significant digits, up or down. */
function twoDigits(x: number, direction: 'up' | 'down'): number {
  const scale = 10 ** (Math.floor(Math.log10(Math.abs(x))) - 1);
  const round = direction === 'up' ? Math.ceil : Math.floor;
  // The tiny nudge keeps a value that is exactly on a step (0.98 stored as 0.97999...) on it.
  return Number((round(x / scale + (direction === 'up' ? -1e-9 : 1e-9)) * scale).toPrecision(2));
}

const LOSS_BOUND = readmeNumber('the loss stays within');
const GRAD_BOUND = readmeNumber("gradient's relative L2 error against float32's is at most");

describe('the bounds the README states', () => {
  it('for the loss: the LOSS_RTOL of test/parity/bfloat16.test.ts (the loss against float32)', () => {
    expect(Number(LOSS_BOUND)).toBe(constantOf('test/parity/bfloat16.test.ts', 'LOSS_RTOL'));
  });

  it('for the loss: the LOSS_RTOL of test/fuzz/bfloat16.test.ts', () => {
    expect(Number(LOSS_BOUND)).toBe(constantOf('test/fuzz/bfloat16.test.ts', 'LOSS_RTOL'));
  });

  it('for the gradient: the GRAD_RTOL of test/fuzz/bfloat16.test.ts (relative L2 against float32)', () => {
    expect(Number(GRAD_BOUND)).toBe(constantOf('test/fuzz/bfloat16.test.ts', 'GRAD_RTOL'));
  });
});

describe('the newest recording of bench/bf16-accuracy.js, independent inputs, every libtorch route', () => {
  it("has every loss's relative error within the README's and the tests' bound", () => {
    expect(across('independent', (s) => s.maxLossRelError, Math.max)).toBeLessThanOrEqual(Number(LOSS_BOUND));
  });

  it("has every gradient's relative L2 error within the README's and the tests' bound", () => {
    expect(across('independent', (s) => s.maxGradRelL2, Math.max)).toBeLessThanOrEqual(Number(GRAD_BOUND));
  });
});

/** The numbers of the README's sentence that `pattern` matches (spaces in it match any run of whitespace). */
function readmeFigures(pattern: string): number[] {
  const match = new RegExp(pattern.replace(/ /g, '\\s+')).exec(README);
  if (!match) throw new Error(`the README has no sentence matching /${pattern}/`);
  return match.slice(1).map(Number);
}

const N = '([0-9.e-]+)';

describe("the README's measured figures are the newest recording's, rounded outwards to two digits", () => {
  const [lossIndependent, gradLow, gradHigh, cosineIndependent] = readmeFigures(
    `Measured: loss within ${N}, gradient ${N} to ${N}, cosine with the float32 gradient at least ${N}\\.`,
  );
  const [lossNear, gradNear, cosineNear] = readmeFigures(`Measured: loss up to ${N}, gradient up to ${N}, cosine at least ${N}\\.`);

  it('independent inputs: the largest loss error', () => {
    expect(lossIndependent).toBe(twoDigits(across('independent', (s) => s.maxLossRelError, Math.max), 'up'));
  });

  it('independent inputs: the smallest and the largest gradient error', () => {
    expect([gradLow, gradHigh]).toEqual([
      twoDigits(across('independent', (s) => s.minGradRelL2, Math.min), 'down'),
      twoDigits(across('independent', (s) => s.maxGradRelL2, Math.max), 'up'),
    ]);
  });

  it('independent inputs: the smallest cosine', () => {
    expect(cosineIndependent).toBe(twoDigits(across('independent', (s) => s.minGradCosine, Math.min), 'down'));
  });

  it('near-target inputs: the largest loss and gradient errors, and the smallest cosine', () => {
    expect([lossNear, gradNear, cosineNear]).toEqual([
      twoDigits(across('near', (s) => s.maxLossRelError, Math.max), 'up'),
      twoDigits(across('near', (s) => s.maxGradRelL2, Math.max), 'up'),
      twoDigits(across('near', (s) => s.minGradCosine, Math.min), 'down'),
    ]);
  });
});
