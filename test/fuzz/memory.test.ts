// Property-based fuzzing of resource exhaustion (test/helpers/fuzz.ts says how to replay a failure):
// steps whose buffers exceed the machine's memory, at every method, host or resident, images or
// volumes, are refused with ERR_OUT_OF_MEMORY before anything is allocated.
import * as os from 'node:os';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, Tensor, type HostTensor, type PerceptualLossOptions } from '../../lib/index';
import {
  count,
  counted,
  describeTotals,
  expectRejectsCode,
  expectThrowsCode,
  FUZZ_RUNS,
  fuzzParams,
  isAsync,
  METHODS,
  setupFuzzFile,
} from '../helpers/fuzz';

setupFuzzFile();

describe('resource exhaustion', () => {
  // A loss whose first conv has 65536 channels: a modest input needs more memory than the
  // machine has. The side is chosen so that the conv output alone is twice the RAM: even an
  // allocation that slipped past the estimate could not succeed.
  const WIDE: PerceptualLossOptions = { inChannels: 1, arch: [65536], device: 'cpu' };
  const side = Math.ceil(Math.sqrt((2 * os.totalmem()) / (65536 * 4))) + 1;
  let wide: PerceptualLoss;
  let probe: number;
  const tiny = { data: Float32Array.from([0.5, -1, 2, 0.25]), shape: [1, 1, 2, 2] };
  beforeAll(() => {
    wide = new PerceptualLoss(WIDE);
    probe = wide.loss(tiny, { data: new Float32Array(4), shape: [1, 1, 2, 2] });
    expect(Number.isFinite(probe)).toBe(true);
  });
  afterAll(() => wide?.dispose());

  const caseArb = fc.record({
    method: fc.constantFrom(...METHODS),
    n: fc.integer({ min: 1, max: 2 }),
    h: fc.integer({ min: side, max: side + 200 }),
    w: fc.integer({ min: side, max: side + 200 }),
    resident: fc.boolean(),
    nhwc: fc.boolean(),
  });

  it('refuses a step whose buffers exceed memory with ERR_OUT_OF_MEMORY before allocating, host or resident; the loss and the process stay usable', async () => {
    const rssBefore = process.memoryUsage().rss;
    await fc.assert(
      fc.asyncProperty(
        caseArb,
        counted('memory', async (c) => {
          const shape = c.nhwc ? [c.n, c.h, c.w, 1] : [c.n, 1, c.h, c.w];
          const data = new Float32Array(count(shape));
          const owned: Tensor[] = [];
          const x = c.resident ? Tensor.from(data, shape, { device: 'cpu' }) : { data, shape };
          if (x instanceof Tensor) owned.push(x);
          const call = { layout: c.nhwc ? ('nhwc' as const) : ('nchw' as const) };
          const labels = { data: new Int32Array(c.n * c.h * c.w), shape: [c.n, c.h, c.w] };
          const invoke = () => {
            switch (c.method) {
              case 'features':
              case 'featuresAsync':
              case 'prepareTarget':
                return wide[c.method](x as HostTensor, call);
              case 'lossAndGradSegmentation':
              case 'lossAndGradSegmentationAsync':
                return wide[c.method](x as HostTensor, labels, call);
              default:
                return wide[c.method](x as HostTensor, x, call);
            }
          };
          try {
            const error = isAsync(c.method) ? await expectRejectsCode(invoke, ['ERR_OUT_OF_MEMORY']) : expectThrowsCode(invoke, ['ERR_OUT_OF_MEMORY']);
            expect(error.message).toMatch(/GiB/);
            expect(wide.loss(tiny, { data: new Float32Array(4), shape: [1, 1, 2, 2] })).toBe(probe);
          } finally {
            owned.forEach((t) => t.dispose());
          }
        }),
      ),
      fuzzParams(FUZZ_RUNS.memory),
    );
    // Nothing of the refused steps was allocated: the inputs themselves are a few MB each.
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(512 * 2 ** 20);
  });
});

describe('resource exhaustion in volumes', () => {
  // The same wide first conv in 3-D: D x H x W chosen so that its output alone is twice the RAM.
  const WIDE: PerceptualLossOptions = { inChannels: 1, spatialDims: 3, arch: [65536], device: 'cpu' };
  const side = Math.ceil(Math.cbrt((2 * os.totalmem()) / (65536 * 4))) + 1;
  let wide: PerceptualLoss;
  let probe: number;
  const tiny = { data: Float32Array.from([0.5, -1, 2, 0.25, 0, 1, -2, 3]), shape: [1, 1, 2, 2, 2] };
  const zeros = { data: new Float32Array(8), shape: [1, 1, 2, 2, 2] };
  beforeAll(() => {
    wide = new PerceptualLoss(WIDE);
    probe = wide.loss(tiny, zeros);
    expect(Number.isFinite(probe)).toBe(true);
  });
  afterAll(() => wide?.dispose());

  const caseArb = fc.record({
    method: fc.constantFrom(...METHODS),
    n: fc.integer({ min: 1, max: 2 }),
    dhw: fc.array(fc.integer({ min: side, max: side + 40 }), { minLength: 3, maxLength: 3 }),
    resident: fc.boolean(),
    ndhwc: fc.boolean(),
  });

  it("refuses a volume step whose buffers exceed memory with ERR_OUT_OF_MEMORY before allocating, host or resident, 'ncdhw' or 'ndhwc'; the loss stays usable", async () => {
    const rssBefore = process.memoryUsage().rss;
    await fc.assert(
      fc.asyncProperty(
        caseArb,
        counted('memoryVolume', async (c) => {
          const shape = c.ndhwc ? [c.n, ...c.dhw, 1] : [c.n, 1, ...c.dhw];
          const data = new Float32Array(count(shape));
          const owned: Tensor[] = [];
          const x = c.resident ? Tensor.from(data, shape, { device: 'cpu' }) : { data, shape };
          if (x instanceof Tensor) owned.push(x);
          const call = { layout: c.ndhwc ? ('ndhwc' as const) : ('ncdhw' as const) };
          const labels = { data: new Int32Array(c.n * count(c.dhw)), shape: [c.n, ...c.dhw] };
          const invoke = () => {
            switch (c.method) {
              case 'features':
              case 'featuresAsync':
              case 'prepareTarget':
                return wide[c.method](x as HostTensor, call);
              case 'lossAndGradSegmentation':
              case 'lossAndGradSegmentationAsync':
                return wide[c.method](x as HostTensor, labels, call);
              default:
                return wide[c.method](x as HostTensor, x, call);
            }
          };
          try {
            const error = isAsync(c.method) ? await expectRejectsCode(invoke, ['ERR_OUT_OF_MEMORY']) : expectThrowsCode(invoke, ['ERR_OUT_OF_MEMORY']);
            expect(error.message).toMatch(/GiB/);
            expect(wide.loss(tiny, zeros)).toBe(probe);
          } finally {
            owned.forEach((t) => t.dispose());
          }
        }),
      ),
      fuzzParams(FUZZ_RUNS.memoryVolume),
    );
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(512 * 2 ** 20);
  });
});

// ================================================================== totals

describeTotals(['memory', 'memoryVolume']);
