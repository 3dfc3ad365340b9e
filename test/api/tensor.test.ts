// Tensor and the host array types of docs/api.md: Tensor.from and its dtypes, devices, copies and
// dispose; Tensors as loss inputs; Float32Array, Float64Array and typed-array views.
import { beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, Tensor, runtime, setNumThreads } from '../../lib/index';
import { host, SHAPE, SMALL } from '../helpers/api';
import { expectCode } from '../helpers/expect-code';
import { randint } from '../helpers/random';

beforeAll(() => {
  // Tiny tensors: one intra-op thread avoids thread hand-offs that are slow on a busy CI machine.
  setNumThreads(1);
});

// ------------------------------------------------------------------ Tensor

describe('Tensor', () => {
  it.each([
    ['float32', new Float32Array([1.5, -2, 3.25, 1e-30, -0, 7])],
    ['float64', new Float64Array([1.5, -2, 3.25, 1e-300, Math.PI, 7])],
    ['int32', new Int32Array([1, -2, 3, 2 ** 31 - 1, -(2 ** 31), 0])],
    ['uint8', new Uint8Array([0, 1, 2, 128, 254, 255])],
  ] as const)('holds %s data of its shape on the CPU and round-trips it exactly', (dtype, data) => {
    const t = Tensor.from(data, [2, 3]);
    expect(t.shape).toEqual([2, 3]);
    expect(t.device).toBe('cpu');
    expect(t.dtype).toBe(dtype);
    const back = t.toArray();
    expect(back.constructor).toBe(data.constructor);
    expect(Array.from(back)).toEqual(Array.from(data));
    t.dispose();
  });

  it("goes on the CPU with device 'cpu' or 'auto' where there is no GPU", () => {
    expect(Tensor.from(new Float32Array(2), [2], { device: 'cpu' }).device).toBe('cpu');
    if (!runtime().devices.some((d) => d.startsWith('cuda'))) {
      expect(Tensor.from(new Float32Array(2), [2], { device: 'auto' }).device).toBe('cpu');
    }
  });

  it('copies its data in and out: later changes to either array do not reach the tensor', () => {
    const data = new Float32Array([1, 2, 3, 4]);
    const t = Tensor.from(data, [4]);
    data[0] = 100;
    const out = t.toArray();
    out[1] = 200;
    expect(Array.from(t.toArray())).toEqual([1, 2, 3, 4]);
  });

  it('reports disposed after dispose(), and every use then throws ERR_DISPOSED', () => {
    const t = Tensor.from(new Float32Array(4), [4]);
    expect(t.disposed).toBe(false);
    t.dispose();
    expect(t.disposed).toBe(true);
    for (const use of [() => t.toArray(), () => t.shape, () => t.device, () => t.dtype]) {
      expectCode(use, 'ERR_DISPOSED');
    }
    expect(() => t.dispose()).not.toThrow();
  });

  it('is disposed by Symbol.dispose (what `using` calls)', () => {
    const t = Tensor.from(new Float32Array(4), [4]);
    t[Symbol.dispose]();
    expect(t.disposed).toBe(true);
  });

  describe('as loss inputs', () => {
    const loss = new PerceptualLoss(SMALL);
    const [pred, target] = [host(SHAPE, 1), host(SHAPE, 2)];

    it('a Tensor pred gives a Tensor grad equal to the host-array grad', () => {
      const expected = loss.lossAndGrad(pred, target);
      const p = Tensor.from(pred.data, SHAPE);
      const t = Tensor.from(target.data, SHAPE);
      for (const result of [loss.lossAndGrad(p, t), loss.lossAndGrad(p, target)]) {
        expect(result.loss).toBe(expected.loss);
        expect(result.grad).toBeInstanceOf(Tensor);
        expect(result.grad.shape).toEqual(SHAPE);
        expect(result.grad.device).toBe('cpu');
        expect(result.grad.dtype).toBe('float32');
        expect(result.grad.toArray()).toEqual(expected.grad);
      }
      expect(loss.loss(p, t)).toBe(expected.loss);
    });

    it('a host pred with a Tensor target gives a host grad', () => {
      const expected = loss.lossAndGrad(pred, target);
      const result = loss.lossAndGrad(pred, Tensor.from(target.data, SHAPE));
      expect(result.grad).toBeInstanceOf(Float32Array);
      expect(result.grad).toEqual(expected.grad);
    });

    it('a float64 Tensor pred gives a float64 Tensor grad', () => {
      const p = Tensor.from(Float64Array.from(pred.data), SHAPE);
      const result = loss.lossAndGrad(p, target);
      expect(result.grad.dtype).toBe('float64');
      expect(result.grad.toArray()).toBeInstanceOf(Float64Array);
    });

    it('features of a Tensor are Tensors, equal to the features of the host array', () => {
      const expected = loss.features(pred);
      const features = loss.features(Tensor.from(pred.data, SHAPE));
      expect(features.map((f) => f.name)).toEqual(SMALL.layers);
      features.forEach((f, i) => {
        expect(f.data).toBeInstanceOf(Tensor);
        expect(f.data.shape).toEqual(expected[i].shape);
        expect(f.shape).toEqual(expected[i].shape);
        expect(f.data.toArray()).toEqual(expected[i].data);
      });
    });

    it('int32 and uint8 label Tensors give the same segmentation result as host labels', () => {
      const labels = randint(2 * 16 * 16, 0, 3, 5);
      const expected = loss.lossAndGradSegmentation(pred, { data: labels, shape: [2, 16, 16] });
      for (const y of [Tensor.from(labels, [2, 16, 16]), Tensor.from(Uint8Array.from(labels), [2, 16, 16])]) {
        const result = loss.lossAndGradSegmentation(Tensor.from(pred.data, SHAPE), y);
        expect(result.loss).toBe(expected.loss);
        expect(result.grad.toArray()).toEqual(expected.grad);
      }
    });
  });
});

// ------------------------------------------------------------------ array types

describe('array types', () => {
  const loss = new PerceptualLoss(SMALL);
  const [pred, target] = [host(SHAPE, 1), host(SHAPE, 2)];
  const pred64 = { data: Float64Array.from(pred.data), shape: SHAPE };
  const target64 = { data: Float64Array.from(target.data), shape: SHAPE };

  it('Float32Array inputs give a Float32Array grad and features', () => {
    expect(loss.lossAndGrad(pred, target).grad).toBeInstanceOf(Float32Array);
    for (const f of loss.features(pred)) expect(f.data).toBeInstanceOf(Float32Array);
  });

  it('Float64Array inputs give a Float64Array grad and features, of the same float32-computed values', () => {
    const r32 = loss.lossAndGrad(pred, target);
    const r64 = loss.lossAndGrad(pred64, target64);
    expect(r64.grad).toBeInstanceOf(Float64Array);
    expect(r64.loss).toBe(r32.loss);
    expect(Array.from(r64.grad)).toEqual(Array.from(r32.grad));
    const f32 = loss.features(pred);
    loss.features(pred64).forEach((f, i) => {
      expect(f.data).toBeInstanceOf(Float64Array);
      expect(Array.from(f.data)).toEqual(Array.from(f32[i].data));
    });
  });

  it('reads a typed-array view (subarray) from its own offset, sync and async', async () => {
    const expected = loss.lossAndGrad(pred, target);
    const backing = new Float32Array(7 + pred.data.length + 5).fill(99);
    backing.set(pred.data, 7);
    const view = { data: backing.subarray(7, 7 + pred.data.length), shape: SHAPE };
    const sync = loss.lossAndGrad(view, target);
    expect(sync.loss).toBe(expected.loss);
    expect(sync.grad).toEqual(expected.grad);
    expect(await loss.lossAsync(view, target)).toBe(expected.loss);
    const view64 = { data: new Float64Array(pred.data.length + 3).fill(-5).subarray(3), shape: SHAPE };
    view64.data.set(pred.data);
    expect(loss.loss(view64, target)).toBe(expected.loss);
  });

  it("a float64 loss given Float32Array inputs returns Float32Array (pred's type)", () => {
    const f64 = new PerceptualLoss({ ...SMALL, dtype: 'float64' });
    expect(f64.lossAndGrad(pred, target).grad).toBeInstanceOf(Float32Array);
    expect(f64.lossAndGrad(pred64, target64).grad).toBeInstanceOf(Float64Array);
  });
});
