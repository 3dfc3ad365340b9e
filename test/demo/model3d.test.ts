// The vessels task's 3-D network: its conv op against tf.conv3d and the backend's own gradient
// kernels, its upsampling, and the whole network's gradient against finite differences.
import '@tensorflow/tfjs-backend-cpu';
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { ensureGradients } from '../../demo/gradients';
import { conv3dOp, createVesselNet, upsample3d } from '../../demo/model3d';
import { substream } from '../../tools/random';

beforeAll(async () => {
  await tf.setBackend('cpu');
  tf.enableProdMode();
  ensureGradients();
  // The reference: tf.conv3d through the backend's own gradient kernels.
  if (tf.getGradient(tf.Conv3D) == null) {
    tf.registerGradient({
      kernelName: tf.Conv3D,
      inputsToSave: ['x', 'filter'],
      gradFunc: (dy, saved, attrs) => {
        const [x, filter] = saved;
        const g = dy as tf.Tensor;
        return {
          x: () => tf.engine().runKernel<tf.Tensor>(tf.Conv3DBackpropInputV2, { dy: g, filter }, { ...attrs, inputShape: x.shape }),
          filter: () => tf.engine().runKernel<tf.Tensor>(tf.Conv3DBackpropFilterV2, { x, dy: g }, { ...attrs, filterShape: filter.shape }),
        };
      },
    });
  }
});

const relativeError = (a: tf.Tensor, b: tf.Tensor) => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] / tf.max(tf.abs(b)).dataSync()[0];

describe('demo 3-D conv op', () => {
  // Output channels 4, 8, 5 and 1: a block of four, two blocks, the remainders (the 1-channel
  // output); stride 2 on even and odd sizes; two inputs (the decoder's skip).
  it.each([
    [1, 1, true, 3, [4, 6, 5], 1, 4],
    [1, 1, false, 3, [5, 4, 6], 3, 8],
    [2, 1, true, 3, [4, 5, 4], 2, 5],
    [1, 2, true, 3, [6, 6, 4], 4, 8],
    [1, 2, false, 3, [5, 7, 6], 2, 3],
    [1, 1, false, 1, [3, 4, 5], 4, 1],
  ] as const)('inputs %i, stride %i, relu %s, a %i-wide filter on %j voxels, %i in, %i out: the value and gradients of tf.conv3d', (count, stride, relu, k, dhw, inC, outC) => {
    tf.tidy(() => {
      const xs = Array.from({ length: count }, (_, i) => tf.randomNormal<tf.Rank.R5>([2, ...dhw, inC + i], 0, 1, 'float32', i + 1));
      const ws = Array.from({ length: count }, (_, i) => tf.randomNormal<tf.Rank.R5>([k, k, k, inC + i, outC], 0, 1, 'float32', 10 + i));
      const bias = tf.randomNormal<tf.Rank.R1>([outC], 0, 1, 'float32', 99);
      const op = conv3dOp(count, stride, relu);
      const forward = (...a: tf.Tensor[]) => op(a.slice(0, count) as tf.Tensor5D[], a.slice(count, 2 * count) as tf.Tensor5D[], a[2 * count] as tf.Tensor1D);
      const referenceForward = (...a: tf.Tensor[]) => {
        let z: tf.Tensor = tf.conv3d(a[0] as tf.Tensor5D, a[count] as tf.Tensor5D, stride, 'same');
        for (let i = 1; i < count; i++) z = tf.add(z, tf.conv3d(a[i] as tf.Tensor5D, a[count + i] as tf.Tensor5D, stride, 'same'));
        z = tf.add(z, a[2 * count]);
        return relu ? tf.relu(z) : z;
      };
      const args = [...xs, ...ws, bias];
      const y = forward(...args);
      const yRef = referenceForward(...args);
      expect(y.shape).toEqual(yRef.shape);
      expect(relativeError(y, yRef)).toBeLessThan(1e-6);
      const weights = tf.randomNormal(y.shape, 0, 1, 'float32', 7);
      const a = tf.grads((...t: tf.Tensor[]) => tf.sum(tf.mul(weights, forward(...t))))(args);
      const b = tf.grads((...t: tf.Tensor[]) => tf.sum(tf.mul(weights, referenceForward(...t))))(args);
      a.forEach((g, i) => {
        expect(g.shape).toEqual(b[i].shape);
        expect(relativeError(g, b[i])).toBeLessThan(1e-5);
      });
    });
  });

  it('upsamples by 2 to even and odd sizes, and sums the gradient back over each block', () => {
    tf.tidy(() => {
      const x = tf.tensor5d([1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 2, 2, 1]);
      const y = upsample3d(x, [4, 3, 4]);
      expect(y.shape).toEqual([1, 4, 3, 4, 1]);
      const v = y.dataSync();
      // y[i, j, l] = x[i >> 1, min(1, j >> 1), l >> 1]
      expect(v[((3 * 3 + 2) * 4 + 1)]).toBe(7);
      expect(v[((0 * 3 + 1) * 4 + 3)]).toBe(2);
      const g = tf.grad((t: tf.Tensor) => tf.sum(upsample3d(t as tf.Tensor5D, [4, 3, 4])))(x);
      // Each voxel of x fills 2 x (2 or 1) x 2 voxels: rows j = 0, 1 go to 0; j = 2 to 1.
      expect(Array.from(g.dataSync())).toEqual([8, 8, 4, 4, 8, 8, 4, 4]);
    });
  });
});

describe('demo 3-D network', () => {
  it('gives logits of the input size, and its gradient matches finite differences', () => {
    const net = createVesselNet({ inChannels: 1, width: 4 }, substream(5, 3));
    try {
      const x = tf.randomNormal<tf.Rank.R5>([1, 4, 6, 6, 1], 0, 1, 'float32', 3);
      const weights = tf.randomNormal([1, 4, 6, 6, 1], 0, 1, 'float32', 4);
      expect(net.forward(x).shape).toEqual([1, 4, 6, 6, 1]);
      // Biases off 0: with the initial zero biases, a voxel whose whole window is 0 after a ReLU
      // sits exactly on the next ReLU's kink, where no difference quotient converges.
      net.variables.filter((v) => v.name.includes('bias')).forEach((v, i) => v.assign(tf.randomNormal(v.shape, 0, 0.1, 'float32', 50 + i)));
      const w = weights.dataSync();
      // The objective summed in float64: float32 round-off in a sum would swamp the differences.
      const objective = () => tf.tidy(() => Array.from(net.forward(x).dataSync()).reduce((s, v, i) => s + v * w[i], 0));
      const { grads } = tf.variableGrads(() => tf.sum<tf.Scalar>(tf.mul(weights, net.forward(x))), net.variables);
      expect(Object.keys(grads)).toHaveLength(net.variables.length);
      // Central differences on a few entries of every variable, at two steps. A ReLU that changes
      // sign within a step spoils that step's estimate, and float32 round-off the smaller step's:
      // nearly all entries must agree closely at one of the steps, and none may be far off.
      const errors: number[] = [];
      for (const v of net.variables) {
        const analytic = grads[v.name].dataSync();
        const data = v.dataSync().slice();
        for (const index of new Set([0, Math.floor(data.length / 2), data.length - 1])) {
          const numeric = [1e-3, 1e-4].map((h) => {
            const at = (delta: number) => {
              const moved = data.slice();
              moved[index] += delta;
              v.assign(tf.tensor(moved, v.shape));
              return objective();
            };
            const estimate = (at(h) - at(-h)) / (2 * h);
            v.assign(tf.tensor(data, v.shape));
            return estimate;
          });
          const error = Math.min(...numeric.map((n) => Math.abs(n - analytic[index]) / Math.max(1, Math.abs(n))));
          expect(error, `${v.name}[${index}]: ${numeric.join(', ')} vs ${analytic[index]}`).toBeLessThan(5e-2);
          errors.push(error);
        }
      }
      expect(errors.filter((e) => e < 2e-3).length).toBeGreaterThanOrEqual(0.85 * errors.length);
      tf.dispose([x, weights, ...Object.values(grads)]);
    } finally {
      net.dispose();
    }
  });
});
