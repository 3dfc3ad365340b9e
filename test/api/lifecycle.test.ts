// Releasing a loss with `using`, loading by file: URL, and the framework-free example of
// docs/api.md run as a user would run it.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, type HostTensor } from '../../lib/index';
import { expectCode } from '../helpers/expect-code';
import { randn } from '../helpers/random';

const ROOT = path.resolve(__dirname, '../..');
const SMALL = { inChannels: 3, arch: [8, 'M', 16] as (number | 'M')[], layers: ['relu1_1', 'relu2_1'] };
const pred: HostTensor<Float32Array> = { data: randn(2 * 3 * 16 * 16, 1), shape: [2, 3, 16, 16] };
const target: HostTensor<Float32Array> = { data: randn(2 * 3 * 16 * 16, 2), shape: [2, 3, 16, 16] };

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-lifecycle-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('PerceptualLoss[Symbol.dispose]', () => {
  it('is what `using` calls: the loss is disposed at the end of the block', () => {
    let escaped: PerceptualLoss;
    {
      using loss = new PerceptualLoss(SMALL);
      expect(loss.loss(pred, target)).toBeGreaterThan(0);
      escaped = loss;
    }
    expectCode(() => escaped.loss(pred, target), 'ERR_DISPOSED', /disposed/);
  });

  it('may follow dispose() without throwing', () => {
    const loss = new PerceptualLoss(SMALL);
    loss.dispose();
    expect(() => loss[Symbol.dispose]()).not.toThrow();
  });
});

describe('PerceptualLoss.load(URL)', () => {
  it('loads a file: URL exactly as its path, and save() takes one too', () => {
    const file = path.join(dir, 'weights.safetensors');
    const original = new PerceptualLoss({ ...SMALL, seed: 7 });
    original.save(pathToFileURL(file));
    const byUrl = PerceptualLoss.load(pathToFileURL(file));
    const byPath = PerceptualLoss.load(file);
    expect(byUrl.stateDict()).toEqual(original.stateDict());
    expect(byUrl.loss(pred, target)).toBe(byPath.loss(pred, target));
    expect(byUrl.loss(pred, target)).toBe(original.loss(pred, target));
    for (const l of [original, byUrl, byPath]) l.dispose();
  });

  it('refuses a URL of another scheme with ERR_FILE naming it', () => {
    expectCode(() => PerceptualLoss.load(new URL('https://example.invalid/w.safetensors')), 'ERR_FILE', /takes a file path or a file: URL; got the https: URL/);
  });
});

describe('examples/train-loop.js', () => {
  it('runs to the end and both of its loops lower their loss', () => {
    const out = execFileSync(process.execPath, [path.join(ROOT, 'examples/train-loop.js')], { cwd: ROOT, encoding: 'utf8' });
    const series = (what: string) => [...out.matchAll(new RegExp(`${what} step\\s+(\\d+)\\s+loss (\\S+)`, 'g'))].map((m) => Number(m[2]));
    for (const what of ['image', 'classifier']) {
      const losses = series(what);
      expect(losses, `${what} losses in:\n${out}`).toHaveLength(4); // steps 0, 20, 40, 60
      expect(losses.every(Number.isFinite)).toBe(true);
      expect(losses[3]).toBeLessThan(losses[0]);
    }
  });
});
