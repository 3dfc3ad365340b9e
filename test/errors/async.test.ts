// The async methods reject with a PerceptualLossError, never throw synchronously, whether the error
// is found before the call or on the worker thread; afterwards the loss object that rejected still
// gives the answer it gave before (docs/api.md, "Errors").
import { beforeAll, describe, it } from 'vitest';
import { Tensor, type HostTensor } from '../../lib/index';
import { expectRejection, host, SHAPE, smallSubject, type Subject } from '../helpers/errors';
import { randint } from '../helpers/random';

let small: Subject;

beforeAll(() => {
  small = smallSubject();
});

// ------------------------------------------------------------------ async methods

describe('async methods reject, never throw', () => {
  const wrongChannels = host([2, 4, 16, 16], 7);

  it('lossAsync rejects a shape mismatch (ERR_SHAPE)', async () => {
    await expectRejection(small, () => small.loss.lossAsync(small.pred, host([2, 3, 16, 20], 1)), 'ERR_SHAPE', ['[2, 3, 16, 20]']);
  });

  it('lossAsync rejects NaN found on the worker thread (ERR_NONFINITE)', async () => {
    const data = small.pred.data.slice();
    data[0] = NaN;
    await expectRejection(small, () => small.loss.lossAsync({ data, shape: SHAPE }, small.target), 'ERR_NONFINITE', ['pred']);
  });

  it('lossAndGradAsync rejects a disposed Tensor (ERR_DISPOSED)', async () => {
    const pred = Tensor.from(small.pred.data, SHAPE);
    pred.dispose();
    await expectRejection(small, () => small.loss.lossAndGradAsync(pred, small.target), 'ERR_DISPOSED');
  });

  it('lossAndGradAsync rejects an Int32Array pred (ERR_DTYPE)', async () => {
    const pred = { data: new Int32Array(1536), shape: SHAPE } as unknown as HostTensor;
    await expectRejection(small, () => small.loss.lossAndGradAsync(pred, small.target), 'ERR_DTYPE', ['Int32Array']);
  });

  it('featuresAsync rejects the wrong channel count (ERR_SHAPE)', async () => {
    await expectRejection(small, () => small.loss.featuresAsync(wrongChannels), 'ERR_SHAPE', ['4 channels']);
  });

  it('featuresAsync rejects Inf (ERR_NONFINITE)', async () => {
    const data = small.pred.data.slice();
    data[99] = Infinity;
    await expectRejection(small, () => small.loss.featuresAsync({ data, shape: SHAPE }), 'ERR_NONFINITE');
  });

  it('lossAndGradSegmentationAsync rejects labels of the wrong shape (ERR_SHAPE)', async () => {
    const labels = { data: new Int32Array(16 * 16), shape: [1, 16, 16] };
    await expectRejection(small, () => small.loss.lossAndGradSegmentationAsync(small.pred, labels), 'ERR_SHAPE', ['labels']);
  });

  it('lossAndGradSegmentationAsync rejects an out-of-range label found on the worker thread (ERR_SHAPE)', async () => {
    const data = randint(2 * 16 * 16, 0, 3, 8);
    data[10] = 7;
    await expectRejection(small, () => small.loss.lossAndGradSegmentationAsync(small.pred, { data, shape: [2, 16, 16] }), 'ERR_SHAPE', [
      '[0, 3)',
      'found 7',
    ]);
  });

  it('rejects bad call options', async () => {
    await expectRejection(small, () => small.loss.lossAsync(small.pred, small.target, { layout: 'chw' as never }), 'ERR_OPTIONS', ['"chw"']);
  });
});
