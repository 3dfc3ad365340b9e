// Gradients for the tfjs-core kernels the demo and the tests differentiate through.
//
// Why this file exists: the CommonJS build of @tensorflow/tfjs-core (what `require` loads in
// Node) registers kernels' forward passes only. The gradient configs live in its ES-module files,
// which Node cannot load (they import without file extensions), and the union package
// @tensorflow/tfjs (or tfjs-node), which would register them, is not a dependency here. With
// tfjs-core alone, `tf.grad(x => tf.sum(x))` fails with "gradient function not found for Sum".
//
// So we register the few we need, written after tfjs-core's own configs (src/gradients/*_grad.ts,
// Apache-2.0), and only where none is registered yet: with @tensorflow/tfjs loaded, its own win.
// The adapter itself (lib/tfjs.ts) needs none of this: it is a customGrad op, and so are the
// demo network's conv layers (demo/model.ts) and tf.losses.softmaxCrossEntropy's core.
import * as tf from '@tensorflow/tfjs-core';
import type { GradConfig, NamedAttrMap, Tensor } from '@tensorflow/tfjs-core';

type Saved = Tensor[];

/** Sums `res` over the axes along which `shape` was broadcast to `outShape`, back to `shape`. */
function unbroadcast(res: Tensor, shape: number[], outShape: number[]): Tensor {
  const axes = tf.backend_util.getReductionAxes(shape, outShape);
  return tf.reshape(axes.length > 0 ? tf.sum(res, axes) : res, shape);
}

function binary(
  kernelName: string,
  derA: (dy: Tensor, a: Tensor, b: Tensor) => Tensor,
  derB: (dy: Tensor, a: Tensor, b: Tensor) => Tensor,
): GradConfig {
  return {
    kernelName,
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, saved) => {
      const [a, b] = saved as Saved;
      const out = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
      const g = dy as Tensor;
      return { a: () => unbroadcast(derA(g, a, b), a.shape, out), b: () => unbroadcast(derB(g, a, b), b.shape, out) };
    },
  };
}

/** dy of a reduction over `axis`, spread back over x's shape (times `scale`). */
function spread(dy: Tensor, x: Tensor, attrs: NamedAttrMap, scale: (reduced: number) => number): Tensor {
  const axes = tf.util.parseAxisParam(attrs.axis as number | number[], x.shape);
  const kept = x.shape.slice();
  for (const axis of axes) kept[axis] = 1;
  const reduced = axes.reduce((n, axis) => n * x.shape[axis], 1);
  return tf.mul(tf.mul(tf.reshape(dy, kept), tf.ones(x.shape, 'float32')), tf.scalar(scale(reduced)));
}

const float = (x: Tensor) => tf.cast(x, 'float32');

/** Runs a backward kernel of the backend (MaxPoolGrad, ...), which has no public op. */
function kernel(name: string, inputs: Record<string, Tensor>, attrs: NamedAttrMap): Tensor {
  return tf.engine().runKernel<Tensor>(name, inputs, attrs);
}

const CONFIGS: GradConfig[] = [
  binary(tf.Add, (dy) => dy, (dy) => dy),
  binary(tf.Sub, (dy) => dy, (dy) => tf.neg(dy)),
  binary(tf.Multiply, (dy, _a, b) => tf.mul(dy, float(b)), (dy, a) => tf.mul(dy, float(a))),
  binary(
    tf.RealDiv,
    (dy, _a, b) => tf.div(dy, float(b)),
    (dy, a, b) => tf.neg(tf.div(tf.mul(dy, float(a)), float(tf.square(b)))),
  ),
  { kernelName: tf.Neg, gradFunc: (dy) => ({ x: () => tf.neg(dy as Tensor) }) },
  { kernelName: tf.Cast, gradFunc: (dy) => ({ x: () => tf.clone(dy as Tensor) }) },
  { kernelName: tf.Identity, gradFunc: (dy) => ({ x: () => tf.cast(dy as Tensor, 'float32') }) },
  { kernelName: tf.Reshape, inputsToSave: ['x'], gradFunc: (dy, saved) => ({ x: () => tf.reshape(dy as Tensor, (saved as Saved)[0].shape) }) },
  {
    kernelName: tf.Sum,
    inputsToSave: ['x'],
    gradFunc: (dy, saved, attrs) => ({ x: () => spread(dy as Tensor, (saved as Saved)[0], attrs, () => 1) }),
  },
  {
    kernelName: tf.Mean,
    inputsToSave: ['x'],
    gradFunc: (dy, saved, attrs) => ({ x: () => spread(dy as Tensor, (saved as Saved)[0], attrs, (n) => 1 / n) }),
  },
  {
    kernelName: tf.Square,
    inputsToSave: ['x'],
    gradFunc: (dy, saved) => ({ x: () => tf.mul(dy as Tensor, tf.mul(float((saved as Saved)[0]), tf.scalar(2))) }),
  },
  {
    kernelName: tf.Abs,
    inputsToSave: ['x'],
    // d|x|/dx = sign(x); tf.step(x, -1) is 1 above 0 and -1 elsewhere.
    gradFunc: (dy, saved) => ({ x: () => tf.mul(dy as Tensor, tf.step(float((saved as Saved)[0]), -1)) }),
  },
  {
    kernelName: tf.Maximum,
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, saved) => {
      const [a, b] = saved as Saved;
      const out = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
      const g = dy as Tensor;
      return {
        a: () => unbroadcast(tf.mul(g, float(tf.greaterEqual(a, b))), a.shape, out),
        b: () => unbroadcast(tf.mul(g, float(tf.less(a, b))), b.shape, out),
      };
    },
  },
  {
    kernelName: tf.Relu,
    inputsToSave: ['x'],
    gradFunc: (dy, saved) => ({ x: () => tf.mul(dy as Tensor, float(tf.step((saved as Saved)[0]))) }),
  },


  {
    kernelName: tf.MaxPool,
    inputsToSave: ['x'],
    outputsToSave: [true],
    gradFunc: (dy, saved, attrs) => {
      const [x, y] = saved as Saved;
      return { x: () => kernel(tf.MaxPoolGrad, { dy: dy as Tensor, input: x, output: y }, attrs) };
    },
  },

  {
    kernelName: tf.ResizeBilinear,
    inputsToSave: ['images'],
    gradFunc: (dy, saved, attrs) => {
      const [images] = saved as Saved;
      return { images: () => kernel(tf.ResizeBilinearGrad, { dy: dy as Tensor, images }, attrs) };
    },
  },
];

/** Registers the gradients above that no one has registered yet. Safe to call more than once. */
export function ensureGradients(): void {
  for (const config of CONFIGS) {
    if (tf.getGradient(config.kernelName) == null) tf.registerGradient(config);
  }
}
