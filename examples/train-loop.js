// A training loop without any framework: the loss gives d loss / d prediction, and the rest is
// plain JavaScript. Run after `npm run build`:  node examples/train-loop.js
//
// 1. Host arrays: optimise an image directly with SGD, against a target prepared once.
// 2. Tensors on the device: a per-pixel linear classifier trained with the segmentation loss;
//    the logits go in as a Tensor, the gradient comes back as a Tensor on the same device.
// @ts-check
'use strict';
const { PerceptualLoss, Tensor } = require('../dist/index.js');

const SIZE = 32;

/** A target image: a bright disc and stripes, 3 channels, NCHW. */
function targetImage() {
  const data = new Float32Array(3 * SIZE * SIZE);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < SIZE; y++) {
      for (let x = 0; x < SIZE; x++) {
        const disc = (x - 12) ** 2 + (y - 14) ** 2 < 60 ? 1 : 0;
        const stripes = Math.floor((x + y) / 4) % 2 === c % 2 ? 0.4 : 0;
        data[(c * SIZE + y) * SIZE + x] = disc + stripes;
      }
    }
  }
  return data;
}

function imageLoop() {
  const loss = new PerceptualLoss({ inChannels: 3, arch: 'vgg11', device: 'cpu' });
  const shape = [1, 3, SIZE, SIZE];
  const target = loss.prepareTarget({ data: targetImage(), shape }); // features computed once
  const pred = new Float32Array(3 * SIZE * SIZE).fill(0.5); // start from flat grey

  const lr = 40;
  for (let step = 0; step <= 60; step++) {
    const { loss: value, grad } = loss.lossAndGrad({ data: pred, shape }, target);
    for (let i = 0; i < pred.length; i++) pred[i] -= lr * grad[i]; // plain SGD, in place
    if (step % 20 === 0) console.log(`  image step ${String(step).padStart(2)}  loss ${Number(value).toFixed(5)}`);
  }
  target.dispose();
  loss.dispose();
}

function classifierLoop() {
  const classes = 3;
  const seg = new PerceptualLoss({ inChannels: classes, arch: [16, 'M', 32, 'M'] }); // device 'auto'
  const device = seg.options.device;
  // Input: the target image; labels: 0 background, 1 disc, 2 stripes.
  const image = targetImage();
  const labels = new Int32Array(SIZE * SIZE);
  for (let p = 0; p < SIZE * SIZE; p++) labels[p] = image[p] >= 1 ? 1 : image[SIZE * SIZE + p] > 0 || image[p] > 0 ? 2 : 0;
  const labelsOnDevice = Tensor.from(labels, [1, SIZE, SIZE], { device }); // uploaded once

  // The model: logits[c, p] = sum_k W[c][k] * image[k, p] + b[c].
  const W = Float32Array.from({ length: classes * 3 }, (_, i) => Math.sin(i + 1) * 0.1);
  const b = new Float32Array(classes);
  const plane = SIZE * SIZE;
  const logits = new Float32Array(classes * plane);
  const lr = 5;
  for (let step = 0; step <= 60; step++) {
    for (let c = 0; c < classes; c++)
      for (let p = 0; p < plane; p++) logits[c * plane + p] = b[c] + W[c * 3] * image[p] + W[c * 3 + 1] * image[plane + p] + W[c * 3 + 2] * image[2 * plane + p];

    const logitsOnDevice = Tensor.from(logits, [1, classes, SIZE, SIZE], { device });
    const { loss: value, grad } = seg.lossAndGradSegmentation(logitsOnDevice, labelsOnDevice);
    const dLogits = /** @type {Float32Array} */ (grad.toArray()); // grad: a Tensor on `device`
    grad.dispose();
    logitsOnDevice.dispose();

    // Chain rule to the weights, then SGD.
    for (let c = 0; c < classes; c++) {
      let db = 0;
      const dW = [0, 0, 0];
      for (let p = 0; p < plane; p++) {
        const g = dLogits[c * plane + p];
        db += g;
        for (let k = 0; k < 3; k++) dW[k] += g * image[k * plane + p];
      }
      b[c] -= lr * db;
      for (let k = 0; k < 3; k++) W[c * 3 + k] -= lr * dW[k];
    }
    if (step % 20 === 0) console.log(`  classifier step ${String(step).padStart(2)}  loss ${Number(value).toFixed(5)}  (on ${device})`);
  }
  labelsOnDevice.dispose();
  seg.dispose();
}

console.log('1. Optimising an image (host Float32Arrays):');
imageLoop();
console.log('2. Training a per-pixel classifier (Tensors on the device):');
classifierLoop();
