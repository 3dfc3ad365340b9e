// CUDA graphs across shape changes: a shape is captured when it repeats, replays give the eager
// answer, a new shape is captured in turn (two are kept), reseed() drops them. On the CPU the
// switch has no effect and no graph is held.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CUDA, DEVICE, host, native, relErr, resolveOptions } from './common.mjs';

const OPTIONS = { inChannels: 3, arch: CUDA ? 'vgg11' : [8, 'M', 16, 'M', 16], device: DEVICE, allowTF32: false };
const A = CUDA ? [4, 3, 64, 64] : [1, 3, 8, 8];
const B = CUDA ? [2, 3, 96, 80] : [2, 3, 8, 12];

function raw(options) {
  return new native.NativeLoss(resolveOptions(options, CUDA ? 1 : 0).native);
}

function step(loss, shape, seed) {
  const p = host(shape, seed);
  const t = host(shape, seed + 1000);
  return loss.lossAndGrad(p.data, shape, t.data, shape, 'nchw');
}

function same(got, want, what) {
  assert.ok(relErr(got.loss, want.loss) <= 1e-6, `${what}: loss ${got.loss} vs ${want.loss}`);
  assert.ok(relErr(got.grad, want.grad) <= 1e-6, `${what}: gradient differs by ${relErr(got.grad, want.grad)}`);
}

describe(`CUDA graphs (${DEVICE})`, () => {
  it('capture on the second sighting, replay the eager answer, recapture on a shape change, keep two', () => {
    const eager = raw(OPTIONS);
    const graphs = raw({ ...OPTIONS, cudaGraphs: true });
    const plan = [[A, 1], [A, 2], [A, 3], [B, 4], [B, 5], [B, 6], [A, 7], [B, 8]];
    const counts = [];
    for (const [shape, seed] of plan) {
      // Fresh inputs every step: a replay must read this call's data, not the captured call's.
      same(step(graphs, shape, seed), step(eager, shape, seed), `${shape.join('x')} seed ${seed}`);
      counts.push(graphs.cachedGraphs());
    }
    assert.deepEqual(counts, CUDA ? [0, 1, 1, 1, 2, 2, 2, 2] : [0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('a third shape evicts the least recently used graph, which is captured again when it comes back', { skip: !CUDA && 'needs a CUDA device' }, () => {
    const C = [1, 3, 48, 48];
    const eager = raw(OPTIONS);
    const graphs = raw({ ...OPTIONS, cudaGraphs: true });
    for (const [shape, seed] of [[A, 1], [A, 2], [B, 3], [B, 4], [C, 5], [C, 6], [A, 7], [A, 8], [A, 9]]) {
      same(step(graphs, shape, seed), step(eager, shape, seed), `${shape.join('x')} seed ${seed}`);
    }
    assert.equal(graphs.cachedGraphs(), 2);
  });

  it('reseed() drops the graphs; the new weights are used from the next step', () => {
    const graphs = raw({ ...OPTIONS, cudaGraphs: true });
    for (let i = 0; i < 3; i++) step(graphs, A, i);
    graphs.reseed(5);
    assert.equal(graphs.cachedGraphs(), 0);
    const fresh = raw({ ...OPTIONS, seed: 5 });
    for (let i = 0; i < 3; i++) same(step(graphs, A, 10 + i), step(fresh, A, 10 + i), `after reseed, step ${i}`);
  });

  it('a prepared target and the loss alone are graphed as their own keys', () => {
    const eager = raw(OPTIONS);
    const graphs = raw({ ...OPTIONS, cudaGraphs: true });
    const t = host(A, 99);
    const pe = eager.prepareTarget(t.data, A, 'nchw');
    const pg = graphs.prepareTarget(t.data, A, 'nchw');
    for (let i = 0; i < 3; i++) {
      const p = host(A, 50 + i);
      same(graphs.lossAndGrad(p.data, A, pg, A, 'nchw'), eager.lossAndGrad(p.data, A, pe, A, 'nchw'), `prepared, step ${i}`);
      const value = graphs.loss(p.data, A, t.data, A, 'nchw');
      assert.ok(relErr(value, eager.loss(p.data, A, t.data, A, 'nchw')) <= 1e-6, `loss alone, step ${i}`);
    }
    assert.equal(graphs.cachedGraphs(), CUDA ? 2 : 0);
  });

  it('async steps replay too, and dispose() frees the graphs', async () => {
    const eager = raw(OPTIONS);
    const graphs = raw({ ...OPTIONS, cudaGraphs: true });
    for (let i = 0; i < 4; i++) {
      const p = host(A, 70 + i);
      const t = host(A, 80 + i);
      same(await graphs.lossAndGradAsync(p.data, A, t.data, A, 'nchw'), eager.lossAndGrad(p.data, A, t.data, A, 'nchw'), `async step ${i}`);
    }
    assert.equal(graphs.cachedGraphs(), CUDA ? 1 : 0);
    graphs.dispose();
    assert.throws(() => graphs.cachedGraphs(), (e) => e.code === 'ERR_DISPOSED');
  });
});
