// Property-based fuzzing of Tensor.from (test/helpers/fuzz.ts says how to replay a failure): random
// array types, shapes, shape defects and options give the code of their defect, or a Tensor that
// keeps its bits and refuses every member once disposed. Then foreign objects and odd values:
// objects made from the prototypes, SharedArrayBuffer inputs, empty shapes, device: null.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { native } from '../../lib/binding';
import { PerceptualLoss, PerceptualLossError, PreparedTarget, Tensor, type ErrorCode, type PerceptualLossOptions, type TensorOptions } from '../../lib/index';
import {
  count,
  counted,
  CUDA,
  describeTotals,
  expectSameBits,
  expectThrowsCode,
  FUZZ_RUNS,
  fuzzParams,
  materialize,
  setupFuzzFile,
} from '../helpers/fuzz';
import { mulberry32 as mulberry } from '../helpers/random';

setupFuzzFile();

const tensorCaseArb = fc.record({
  type: fc.constantFrom('Float32Array', 'Float64Array', 'Int32Array', 'Uint8Array', 'Buffer', 'Int16Array', 'Uint8ClampedArray', 'BigInt64Array', 'Array', 'DataView', 'null', 'string'),
  dims: fc.array(fc.nat(4), { maxLength: 5 }),
  shapeDefect: fc.constantFrom(null, null, null, 'fraction', 'negative', 'nan', 'string', 'notArray', 'length', 'unsafe'),
  options: fc.constantFrom<unknown>(undefined, {}, { device: 'cpu' }, { device: 'auto' }, { device: 'cuda' }, { device: 'cuda:3' }, { device: 'tpu' }, { device: 5 }, null, 'cpu', 7),
  fill: fc.nat(),
  special: fc.boolean(),
});

describe('Tensor', () => {
  it('Tensor.from validates its arguments; a valid Tensor keeps its bits, and every member refuses it once disposed', () => {
    const valid = ['Float32Array', 'Float64Array', 'Int32Array', 'Uint8Array', 'Buffer'];
    fc.assert(
      fc.property(
        tensorCaseArb,
        counted('tensor', (c) => {
          const codes = new Set<ErrorCode>();
          let shape: unknown = c.dims;
          let length = count(c.dims);
          switch (c.shapeDefect) {
            case 'fraction':
              shape = [...c.dims, 1.5];
              break;
            case 'negative':
              shape = [...c.dims, -1];
              break;
            case 'nan':
              shape = [...c.dims, NaN];
              break;
            case 'string':
              shape = [...c.dims.map(String), '1'];
              break;
            case 'notArray':
              shape = Int32Array.from(c.dims);
              break;
            case 'unsafe':
              shape = [...c.dims, 2 ** 53];
              break;
            case 'length':
              length += 1 + (c.fill % 3);
              break;
          }
          if (c.shapeDefect !== null) codes.add('ERR_SHAPE');
          const rand = mulberry(c.fill);
          const values = Array.from({ length }, (_, i) => (c.special && i % 3 === 0 ? [NaN, Infinity, -0, 1e-45][i % 4] : Math.floor(rand() * 200) - 50 + rand()));
          const make: Record<string, () => unknown> = {
            Float32Array: () => Float32Array.from(values),
            Float64Array: () => Float64Array.from(values),
            Int32Array: () => Int32Array.from(values.map((v) => (Number.isFinite(v) ? Math.trunc(v) : 0))),
            Uint8Array: () => Uint8Array.from(values.map((v) => (Number.isFinite(v) ? Math.abs(Math.trunc(v)) % 256 : 0))),
            Buffer: () => Buffer.from(values.map((v) => (Number.isFinite(v) ? Math.abs(Math.trunc(v)) % 256 : 0))),
            Int16Array: () => new Int16Array(length),
            Uint8ClampedArray: () => new Uint8ClampedArray(length),
            BigInt64Array: () => new BigInt64Array(length),
            Array: () => values,
            DataView: () => new DataView(new ArrayBuffer(length * 4)),
            null: () => null,
            string: () => 'data',
          };
          const data = make[c.type]();
          if (!valid.includes(c.type)) codes.add('ERR_DTYPE');
          const o = c.options as { device?: unknown } | null | undefined;
          if (o === null || (o !== undefined && typeof o !== 'object')) codes.add('ERR_OPTIONS');
          else if (o?.device !== undefined && !['cpu', 'auto', 'cuda', 'cuda:3'].includes(o.device as string)) codes.add('ERR_OPTIONS');
          else if (o?.device === 'cuda' && CUDA.length === 0) codes.add('ERR_DEVICE');
          else if (o?.device === 'cuda:3' && CUDA.length <= 3) codes.add('ERR_DEVICE');
          if (codes.size > 0) {
            expectThrowsCode(() => Tensor.from(data as Float32Array, shape as number[], c.options as TensorOptions), [...codes]);
            return;
          }
          const live = native().liveTensors();
          const t = Tensor.from(data as Float32Array, shape as number[], c.options as TensorOptions);
          expect(native().liveTensors()).toBe(live + 1);
          const typeName = c.type === 'Buffer' ? 'Uint8Array' : c.type;
          expect(t.shape).toEqual(c.dims);
          const dtypes: Record<string, string> = { Float32Array: 'float32', Float64Array: 'float64', Int32Array: 'int32', Uint8Array: 'uint8' };
          expect(t.dtype).toBe(dtypes[typeName]);
          expect(t.device).toBe(o?.device === 'cpu' || CUDA.length === 0 ? 'cpu' : 'cuda:0');
          const back = t.toArray();
          expect(back.constructor.name).toBe(typeName);
          expectSameBits(back, c.type === 'Buffer' ? new Uint8Array(data as Buffer) : (data as Float32Array), 'toArray()');
          // The copy is the Tensor's own: changing the source changes nothing.
          if ((data as Float32Array).length > 0) {
            (data as Float32Array)[0] = 7;
            expect(t.toArray()[0]).toBe(back[0]);
          }
          expect(t.disposed).toBe(false);
          if (c.fill % 2) t.dispose();
          else t[Symbol.dispose]();
          expect(native().liveTensors()).toBe(live);
          expect(t.disposed).toBe(true);
          for (const member of [() => t.shape, () => t.dtype, () => t.device, () => t.toArray()]) expectThrowsCode(member, ['ERR_DISPOSED']);
          t.dispose();
          expect(native().liveTensors()).toBe(live);
        }),
      ),
      fuzzParams(FUZZ_RUNS.tensor),
    );
  });
});

describe('foreign objects and odd values', () => {
  const options: PerceptualLossOptions = { inChannels: 2, arch: [3, 'M', 2], device: 'cpu' };
  const shape = [2, 2, 4, 4];
  const pred = { data: materialize({ seed: 11, kind: 'randn', scale: 1 }, count(shape)), shape };
  const target = { data: materialize({ seed: 12, kind: 'randn', scale: 1 }, count(shape)), shape };

  it('an object made from PreparedTarget.prototype is refused as a target with ERR_FOREIGN_OBJECT', () => {
    const loss = new PerceptualLoss(options);
    const fake = Object.create(PreparedTarget.prototype) as PreparedTarget;
    expectThrowsCode(() => loss.loss(pred, fake), ['ERR_FOREIGN_OBJECT']);
    loss.dispose();
  });

  it('every member of an object made from Tensor.prototype or PreparedTarget.prototype throws ERR_FOREIGN_OBJECT', () => {
    const tensor = Object.create(Tensor.prototype) as Tensor;
    const prepared = Object.create(PreparedTarget.prototype) as PreparedTarget;
    const members: Array<[string, () => unknown]> = [
      ['Tensor#shape', () => tensor.shape],
      ['Tensor#dtype', () => tensor.dtype],
      ['Tensor#device', () => tensor.device],
      ['Tensor#toArray', () => tensor.toArray()],
      ['Tensor#disposed', () => tensor.disposed],
      ['Tensor#dispose', () => tensor.dispose()],
      ['PreparedTarget#shape', () => prepared.shape],
      ['PreparedTarget#disposed', () => prepared.disposed],
      ['PreparedTarget#dispose', () => prepared.dispose()],
    ];
    const failures = members.flatMap(([name, member]) => {
      try {
        member();
        return [`${name}: no error`];
      } catch (error) {
        return error instanceof PerceptualLossError && error.code === 'ERR_FOREIGN_OBJECT' ? [] : [`${name}: ${String(error)}`];
      }
    });
    expect(failures).toEqual([]);
  });

  it('reads a Float32Array over a SharedArrayBuffer like any Float32Array, sync and async', async () => {
    const loss = new PerceptualLoss(options);
    const shared = new Float32Array(new SharedArrayBuffer(pred.data.byteLength));
    shared.set(pred.data);
    const expected = loss.lossAndGrad(pred, target);
    const viaShared = loss.lossAndGrad({ data: shared, shape }, target);
    expect(viaShared.loss).toBe(expected.loss);
    expectSameBits(viaShared.grad, expected.grad, 'grad');
    expect(await loss.lossAsync({ data: shared, shape }, target)).toBe(expected.loss);
    const t = Tensor.from(shared, shape);
    expectSameBits(t.toArray(), pred.data, 'Tensor.from(shared)');
    t.dispose();
    loss.dispose();
  });

  it('Tensor.from takes an empty shape with huge other dimensions as torch.empty does: accepted, or ERR_SHAPE where the size or stride calculation overflows', () => {
    for (const dims of [[3, 0, 2 ** 53 - 1], [0, 1, 2 ** 53 - 1]]) {
      const t = Tensor.from(new Float32Array(0), dims);
      expect(t.shape).toEqual(dims);
      expect(t.toArray()).toEqual(new Float32Array(0));
      t.dispose();
    }
    // torch.empty(2**40, 2**40, 0): "Storage size calculation overflowed".
    expectThrowsCode(() => Tensor.from(new Float32Array(0), [2 ** 40, 2 ** 40, 0]), ['ERR_SHAPE']);
    // torch.empty(0, 2**40, 2**40) in torch 2.x: "Stride calculation overflowed" (1.13 did not check).
    expectThrowsCode(() => Tensor.from(new Float32Array(0), [0, 2 ** 40, 2 ** 40]), ['ERR_SHAPE']);
  });

  it('gives the same loss, bit for bit, for nhwc data and the same data in nchw, with one channel and one sample (style on)', () => {
    const loss = new PerceptualLoss({ inChannels: 1, arch: [3, 4, 2], layers: ['conv1_1'], styleWeight: 0.5, criterion: 'l1', device: 'cpu' });
    for (const [h, w] of [[5, 4], [2, 1]]) {
      const data = Float32Array.from({ length: h * w }, (_, i) => Math.sin(i * 1.7));
      const zero = new Float32Array(data.length);
      // With N = C = 1 the NCHW and NHWC orders hold the same bytes.
      const nchw = loss.lossAndGrad({ data, shape: [1, 1, h, w] }, { data: zero, shape: [1, 1, h, w] });
      const nhwc = loss.lossAndGrad({ data, shape: [1, h, w, 1] }, { data: zero, shape: [1, h, w, 1] }, { layout: 'nhwc' });
      expect(nhwc.loss, `${h}x${w}`).toBe(nchw.loss);
      expectSameBits(nhwc.grad, nchw.grad, `grad ${h}x${w}`);
    }
    loss.dispose();
  });

  it('gives the same loss, bit for bit, for ndhwc volumes and the same data in ncdhw, with one channel and one sample, as host arrays and as 5-D Tensors (style on)', () => {
    using loss = new PerceptualLoss({ inChannels: 1, spatialDims: 3, arch: [3, 2], layers: ['conv1_1', 'relu1_2'], styleWeight: 0.5, criterion: 'l1', device: 'cpu' });
    for (const [d, h, w] of [[3, 5, 4], [1, 2, 1]]) {
      const data = Float32Array.from({ length: d * h * w }, (_, i) => Math.sin(i * 1.7));
      const zero = new Float32Array(data.length);
      const [first, last] = [[1, 1, d, h, w], [1, d, h, w, 1]];
      // With N = C = 1 the NCDHW and NDHWC orders hold the same bytes.
      const ncdhw = loss.lossAndGrad({ data, shape: first }, { data: zero, shape: first });
      const ndhwc = loss.lossAndGrad({ data, shape: last }, { data: zero, shape: last }, { layout: 'ndhwc' });
      expect(ndhwc.loss, `${d}x${h}x${w}`).toBe(ncdhw.loss);
      expectSameBits(ndhwc.grad, ncdhw.grad, `grad ${d}x${h}x${w}`);
      using pred = Tensor.from(data, last);
      using target = Tensor.from(zero, last);
      const resident = loss.lossAndGrad(pred, target, { layout: 'ndhwc' });
      using grad = resident.grad;
      expect(resident.loss).toBe(ncdhw.loss);
      expect(grad.shape).toEqual(last);
      expectSameBits(grad.toArray(), ncdhw.grad, `Tensor grad ${d}x${h}x${w}`);
    }
  });

  it('refuses device: null like every other option given null (ERR_OPTIONS), in the constructor and in Tensor.from', () => {
    expectThrowsCode(() => new PerceptualLoss({ inChannels: 1, device: null as never }), ['ERR_OPTIONS']);
    expectThrowsCode(() => Tensor.from(new Float32Array(1), [1], { device: null as never }), ['ERR_OPTIONS']);
  });
});

// ================================================================== totals

describeTotals(['tensor']);
