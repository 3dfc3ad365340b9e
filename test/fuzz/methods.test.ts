// Property-based fuzzing of the other methods (test/helpers/fuzz.ts says how to replay a failure):
// reseed, setNumThreads, the options of load, and every member of a disposed loss give a
// PerceptualLossError with the right code, or the documented result; for image and volume losses.
import * as os from 'node:os';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PerceptualLoss, runtime, setNumThreads, type PerceptualLossOptions } from '../../lib/index';
import { counted, describeTotals, expectSameBits, expectThrowsCode, FUZZ_RUNS, fuzzParams, setupFuzzFile, tinyConfigArb, tinyVolumeConfigArb } from '../helpers/fuzz';

setupFuzzFile();

const otherFields = {
  op: fc.constantFrom('reseed', 'setNumThreads', 'load', 'disposed'),
  seed: fc.oneof(fc.nat(1000), fc.maxSafeNat(), fc.constantFrom<unknown>(-1, 1.5, NaN, 2 ** 53, '1', null, undefined, Infinity, {}, 1n)),
  threads: fc.constantFrom<unknown>(1, 0, -1, 1.5, 1025, NaN, '2', null, undefined, Infinity, 2 ** 53),
  loadOptions: fc.constantFrom<unknown>(null, 5, 'vgg19', true, { inChannels: 0 }, { arch: 'vgg20' }, { criterion: 'mse' }, { bogus: 1 }),
  member: fc.constantFrom('stateDict', 'save', 'reseed', 'prepareTarget', 'options'),
};
const otherCaseArb = fc.record({ config: tinyConfigArb, ...otherFields });
/** Volume losses (spatialDims 3): Conv3d weights, 5-D inputs. */
const volumeOtherCaseArb = fc.record({ config: tinyVolumeConfigArb, ...otherFields });

function runOtherCase(c: typeof otherCaseArb extends fc.Arbitrary<infer T> ? T : never): void {
  const loss = new PerceptualLoss({ ...c.config.options, device: 'cpu' });
  try {
    const before = loss.stateDict();
    const unchanged = () => {
      const now = loss.stateDict();
      for (const [name, value] of Object.entries(before)) expectSameBits(now[name].data, value.data, name);
    };
    switch (c.op) {
      case 'reseed': {
        const valid = typeof c.seed === 'number' && Number.isSafeInteger(c.seed) && c.seed >= 0;
        if (!valid) {
          expectThrowsCode(() => loss.reseed(c.seed as number), ['ERR_OPTIONS']);
          unchanged();
          expect(loss.options.seed).toBe(c.config.options.seed);
          return;
        }
        loss.reseed(c.seed as number);
        expect(loss.options.seed).toBe(c.seed);
        const fresh = new PerceptualLoss({ ...c.config.options, device: 'cpu', seed: c.seed as number });
        const want = fresh.stateDict();
        fresh.dispose();
        for (const [name, value] of Object.entries(loss.stateDict())) {
          expectSameBits(value.data, want[name].data, name);
          // Conv2d weights [Cout, Cin, 3, 3], Conv3d ones [Cout, Cin, 3, 3, 3]; biases [Cout].
          if (name.endsWith('.weight')) expect(value.shape.slice(2), name).toEqual(new Array<number>(c.config.spatialDims).fill(3));
        }
        return;
      }
      case 'setNumThreads': {
        if (c.threads === 1) {
          setNumThreads(1);
          expect(runtime().numThreads).toBe(1);
        } else expectThrowsCode(() => setNumThreads(c.threads as number), ['ERR_OPTIONS']);
        return;
      }
      case 'load': {
        // Invalid load options are refused before the file is read (it does not exist).
        expectThrowsCode(() => PerceptualLoss.load('/nonexistent/never.safetensors', c.loadOptions as Partial<PerceptualLossOptions>), c.loadOptions !== null && typeof c.loadOptions === 'object' ? ['ERR_FILE', 'ERR_OPTIONS'] : ['ERR_OPTIONS']);
        return;
      }
      case 'disposed': {
        loss.dispose();
        // A valid input of the loss's rank: [1, C, 8, 8] or [1, C, 8, 8, 8].
        const side = new Array<number>(c.config.spatialDims).fill(8);
        const spatial = 8 ** c.config.spatialDims;
        const calls: Record<string, () => unknown> = {
          stateDict: () => loss.stateDict(),
          save: () => loss.save(`${os.tmpdir()}/pl-fuzz-never-written.safetensors`),
          reseed: () => loss.reseed(1),
          prepareTarget: () => loss.prepareTarget({ data: new Float32Array(spatial * c.config.js.inChannels), shape: [1, c.config.js.inChannels, ...side] }),
        };
        if (c.member === 'options') {
          // The options stay readable after dispose(): they describe what the loss was.
          expect(loss.options.inChannels).toBe(c.config.js.inChannels);
          return;
        }
        expectThrowsCode(calls[c.member], ['ERR_DISPOSED']);
        return;
      }
    }
  } finally {
    loss.dispose();
  }
}

describe('other methods', () => {
  it('reseed, setNumThreads, load options and a disposed loss: PerceptualLossError with the right code, or the documented result', () => {
    fc.assert(fc.property(otherCaseArb, counted('methods', runOtherCase)), fuzzParams(FUZZ_RUNS.methods));
  });

  it('volume losses (spatialDims 3): reseed, setNumThreads, load options and a disposed loss give the right code, or the documented result', () => {
    fc.assert(fc.property(volumeOtherCaseArb, counted('methodsVolume', runOtherCase)), fuzzParams(FUZZ_RUNS.methodsVolume));
  });
});

// ================================================================== totals

describeTotals(['methods', 'methodsVolume']);
