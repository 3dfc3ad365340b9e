// Every use of a disposed object (a Tensor, a prepared target, a PerceptualLoss) gets a
// PerceptualLossError ERR_DISPOSED; afterwards the loss object that threw still gives the answer it
// gave before (docs/api.md, "Errors").
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, Tensor } from '../../lib/index';
import { expectError, expectRejection, SHAPE, SMALL, smallSubject, type Subject } from '../helpers/errors';

let small: Subject;
let dir: string;

beforeAll(() => {
  small = smallSubject();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-errors-disposed-'));
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

// ------------------------------------------------------------------ disposed objects

describe('disposed objects', () => {
  it('rejects a disposed Tensor as pred (ERR_DISPOSED)', () => {
    const pred = Tensor.from(small.pred.data, SHAPE);
    pred.dispose();
    expectError(small, () => small.loss.loss(pred, small.target), 'ERR_DISPOSED', ['Tensor', 'disposed']);
    expectError(small, () => small.loss.lossAndGrad(pred, small.target), 'ERR_DISPOSED');
    expectError(small, () => small.loss.features(pred), 'ERR_DISPOSED');
  });

  it('rejects a disposed Tensor as target (ERR_DISPOSED)', () => {
    const target = Tensor.from(small.target.data, SHAPE);
    target.dispose();
    expectError(small, () => small.loss.lossAndGrad(small.pred, target), 'ERR_DISPOSED', ['Tensor', 'disposed']);
    expectError(small, () => small.loss.prepareTarget(target), 'ERR_DISPOSED');
  });

  it('rejects every use of a disposed Tensor itself', () => {
    const t = Tensor.from(small.pred.data, SHAPE);
    t.dispose();
    expectError(small, () => t.toArray(), 'ERR_DISPOSED');
    expectError(small, () => t.shape, 'ERR_DISPOSED');
    expectError(small, () => t.dtype, 'ERR_DISPOSED');
    expectError(small, () => t.device, 'ERR_DISPOSED');
  });

  it('rejects a disposed prepared target (ERR_DISPOSED)', () => {
    const prepared = small.loss.prepareTarget(small.target);
    prepared.dispose();
    expect(prepared.disposed).toBe(true);
    expectError(small, () => small.loss.loss(small.pred, prepared), 'ERR_DISPOSED', ['prepared target', 'disposed']);
    expectError(small, () => small.loss.lossAndGrad(small.pred, prepared), 'ERR_DISPOSED');
  });

  it('rejects every method of a disposed PerceptualLoss (ERR_DISPOSED), and dispose() twice is safe', async () => {
    const loss = new PerceptualLoss(SMALL);
    const { pred, target } = small;
    loss.dispose();
    loss.dispose();
    const labels = { data: new Int32Array(2 * 16 * 16), shape: [2, 16, 16] };
    expectError(small, () => loss.loss(pred, target), 'ERR_DISPOSED', ['PerceptualLoss', 'disposed']);
    expectError(small, () => loss.lossAndGrad(pred, target), 'ERR_DISPOSED');
    expectError(small, () => loss.features(pred), 'ERR_DISPOSED');
    expectError(small, () => loss.prepareTarget(target), 'ERR_DISPOSED');
    expectError(small, () => loss.lossAndGradSegmentation(pred, labels), 'ERR_DISPOSED');
    expectError(small, () => loss.stateDict(), 'ERR_DISPOSED');
    expectError(small, () => loss.save(path.join(dir, 'disposed.safetensors')), 'ERR_DISPOSED');
    expect(fs.existsSync(path.join(dir, 'disposed.safetensors'))).toBe(false);
    expectError(small, () => loss.reseed(1), 'ERR_DISPOSED');
    await expectRejection(small, () => loss.lossAsync(pred, target), 'ERR_DISPOSED');
    await expectRejection(small, () => loss.lossAndGradAsync(pred, target), 'ERR_DISPOSED');
    await expectRejection(small, () => loss.featuresAsync(pred), 'ERR_DISPOSED');
    await expectRejection(small, () => loss.lossAndGradSegmentationAsync(pred, labels), 'ERR_DISPOSED');
  });

  it('rejects a prepared target once its PerceptualLoss is disposed', () => {
    const loss = new PerceptualLoss(SMALL);
    const prepared = loss.prepareTarget(small.target);
    loss.dispose();
    expectError(small, () => loss.loss(small.pred, prepared), 'ERR_DISPOSED');
  });
});
