// Property-based fuzzing of the constructor's options (test/helpers/fuzz.ts says how to replay a
// failure): random valid, invalid, missing, undefined and unknown options; every invalid object
// throws a PerceptualLossError with the code of its defect, every valid one resolves to the
// options docs/api.md gives, defaults included; for images and volumes (spatialDims: 3, whose
// default network, layouts and refusal of the 2-D layout names differ).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PerceptualLoss, runtime, type ErrorCode, type PerceptualLossOptions } from '../../lib/index';
import { counted, CUDA, defaultLayers, describeTotals, expectThrowsCode, FUZZ_RUNS, fuzzParams, setupFuzzFile } from '../helpers/fuzz';
import * as ref from '../helpers/js-reference';

setupFuzzFile();

/** A value for one option: absent, valid or invalid (with the code it must give). */
interface OptionDraw {
  key: string;
  value: unknown;
  code?: ErrorCode;
}

const BAD_NUMBERS = [-1, -1e-300, NaN, Infinity, -Infinity, '1', null, true, [], {}, 10n];

function optionDrawArb(key: string, valid: fc.Arbitrary<unknown>, invalid: readonly unknown[], code: ErrorCode = 'ERR_OPTIONS'): fc.Arbitrary<OptionDraw | null> {
  return fc.oneof(
    { arbitrary: fc.constant(null), weight: 6 },
    { arbitrary: valid.map((value) => ({ key, value })), weight: 3 },
    { arbitrary: fc.constantFrom(...invalid).map((value) => ({ key, value, code })), weight: 1 },
  );
}

const VGG_SHALLOW = ['conv1_1', 'relu1_1', 'pool1', 'conv2_1', 'relu2_1'];

const optionsCaseArb = fc.record({
  form: fc.oneof({ arbitrary: fc.constant('object' as const), weight: 30 }, { arbitrary: fc.constantFrom(undefined, null, 3, 'vgg19', [], [{ inChannels: 3 }], () => 3), weight: 1 }),
  inChannels: fc.oneof(
    { arbitrary: fc.integer({ min: 1, max: 4 }).map((value) => ({ value })), weight: 12 },
    { arbitrary: fc.constantFrom(0, -1, 2.5, NaN, Infinity, '3', null, true, 65537, 2 ** 53, [3], undefined).map((value) => ({ value, code: 'ERR_OPTIONS' as const })), weight: 1 },
    { arbitrary: fc.constant({ missing: true, code: 'ERR_OPTIONS' as const }), weight: 1 },
  ),
  arch: fc.oneof(
    { arbitrary: fc.constant(undefined), weight: 1 },
    { arbitrary: fc.constantFrom('vgg11', 'vgg13', 'vgg16', 'vgg19').map((value) => ({ value })), weight: 2 },
    { arbitrary: fc.array(fc.oneof(fc.integer({ min: 1, max: 4 }), fc.constant('M')), { minLength: 1, maxLength: 5 }).filter((a) => a.some((v) => v !== 'M')).map((value) => ({ value })), weight: 6 },
    {
      arbitrary: fc
        .constantFrom('vgg20', 'VGG19', 19, [], ['M'], ['M', 'M'], [0], [1.5], [-1], ['m'], [65537], [2 ** 53], null, {}, [[8]], ['8'], [NaN], [Infinity], [4, 'M', true])
        .map((value) => ({ value, code: 'ERR_OPTIONS' as const })),
      weight: 1,
    },
  ),
  layersMode: fc.constantFrom('absent', 'valid', 'valid', 'invalid'),
  layersPick: fc.uniqueArray(fc.nat(40), { minLength: 1, maxLength: 3 }),
  badLayers: fc.constantFrom([], 'relu1_1', ['relu9_9'], ['foo'], [3], ['relu1_1', 'relu1_1'], null, {}, ['RELU1_1'], ['conv0_1'], ['pool0']),
  weightsMode: fc.constantFrom('absent', 'absent', 'array', 'object', 'invalid'),
  weights: fc.array(fc.double({ min: 0, max: 1e6, noNaN: true }), { minLength: 5, maxLength: 5 }),
  badWeights: fc.constantFrom('wrongLength', 'negative', 'nan', 'infinite', 'string', 'unknownTap', 'null', 'stringValue'),
  criterion: optionDrawArb('criterion', fc.constantFrom('l1', 'l2', 'smooth_l1'), ['mse', 'L1', 'smoothl1', 1, null, {}]),
  featureWeight: optionDrawArb('featureWeight', fc.oneof(fc.constant(0), fc.double({ min: 0, max: 1e300, noNaN: true })), BAD_NUMBERS),
  styleWeight: optionDrawArb('styleWeight', fc.oneof(fc.constant(0), fc.double({ min: 0, max: 1e300, noNaN: true })), BAD_NUMBERS),
  reduction: optionDrawArb('reduction', fc.constantFrom('mean', 'sum', 'none'), ['avg', 'MEAN', 0, null, ['mean']]),
  init: optionDrawArb(
    'init',
    fc.oneof(
      fc.constantFrom('kaiming_normal', 'kaiming_uniform', 'xavier_normal', 'xavier_uniform'),
      fc.double({ min: 1e-6, max: 1e3, noNaN: true }).map((normal) => ({ normal })),
    ),
    ['he_normal', { normal: 0 }, { normal: -1 }, { normal: NaN }, { normal: Infinity }, { std: 1 }, { normal: 1, mean: 0 }, [], null, 5, { normal: '1' }, {}],
  ),
  seed: optionDrawArb('seed', fc.oneof(fc.nat(1000), fc.maxSafeNat()), [-1, 1.5, NaN, 2 ** 53, '1', null, Infinity, 1e300, {}]),
  pool: optionDrawArb('pool', fc.constantFrom('max', 'avg'), ['min', 'MAX', 1, null]),
  device: fc.oneof(
    { arbitrary: fc.constant(null), weight: 6 },
    { arbitrary: fc.constantFrom('cpu', 'auto').map((value) => ({ key: 'device', value })), weight: 3 },
    // Without a CUDA device these are refused with ERR_DEVICE; with one, cuda:7 is out of range.
    { arbitrary: fc.constantFrom('cuda', 'cuda:0', 'cuda:7').map((value) => ({ key: 'device', value, cuda: true })), weight: 1 },
    { arbitrary: fc.constantFrom('gpu', 'cuda:', 'cuda:-1', 'CPU', 'cuda:0:0', 'cpu:0', 0, false, {}).map((value) => ({ key: 'device', value, code: 'ERR_OPTIONS' as const })), weight: 1 },
  ),
  dtype: fc.oneof(
    { arbitrary: fc.constant(null), weight: 6 },
    { arbitrary: fc.constantFrom('float32', 'float64').map((value) => ({ key: 'dtype', value })), weight: 3 },
    { arbitrary: fc.constantFrom('float16', 'bfloat16').map((value) => ({ key: 'dtype', value, half: true })), weight: 1 },
    { arbitrary: fc.constantFrom('float', 'fp32', 32, null, 'Float32').map((value) => ({ key: 'dtype', value, code: 'ERR_OPTIONS' as const })), weight: 1 },
  ),
  spatialDims: optionDrawArb('spatialDims', fc.constantFrom(2, 3), [1, 4, 0, '3', 3.5, null, true, [3], NaN, '2d']),
  // The layout of the loss's dimensionality (first or second), one of the other dimensionality
  // (refused: 'nchw' for a volume loss, 'ndhwc' for an image loss), or no layout at all.
  layout: fc.oneof(
    { arbitrary: fc.constant(null), weight: 6 },
    { arbitrary: fc.nat(1).map((index) => ({ index })), weight: 3 },
    { arbitrary: fc.nat(1).map((index) => ({ index, other: true })), weight: 1 },
    { arbitrary: fc.constantFrom('NCHW', 'chw', 'nwhc', 1, null, 'NCDHW', 'dhwc', 'nchwd').map((value) => ({ value })), weight: 1 },
  ),
  checkFinite: optionDrawArb('checkFinite', fc.boolean(), ['yes', 0, 1, null, 'true']),
  unknown: fc.oneof(
    { arbitrary: fc.constant(null), weight: 12 },
    { arbitrary: fc.constantFrom('criterio', 'lr', 'Layers', 'inchannels', '__proto__', 'constructor', 'toString', 'device ').map((key) => ({ key })), weight: 1 },
  ),
  undefinedKeys: fc.subarray(['arch', 'layers', 'criterion', 'seed', 'dtype', 'layout', 'checkFinite', 'spatialDims']),
});

type OptionsCase = typeof optionsCaseArb extends fc.Arbitrary<infer T> ? T : never;

/** The default network of a volume loss (docs/api.md, "Volumes (3-D)"). */
const DEFAULT_ARCH_3D: ref.ArchEntry[] = [64, 'M', 128, 'M', 256, 'M', 512, 'M', 512];
const layoutsOf = (spatialDims: number) => (spatialDims === 3 ? ['ncdhw', 'ndhwc'] : ['nchw', 'nhwc']);

/** The conv/'M' list of an arch option, for the names of its taps. */
function archEntries(arch: unknown): ref.ArchEntry[] {
  const cfgs: Record<string, ref.ArchEntry[]> = {
    vgg11: [64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
    vgg13: [64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
    vgg16: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'],
    vgg19: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M'],
  };
  return typeof arch === 'string' ? cfgs[arch] : (arch as ref.ArchEntry[]);
}

/** Builds the options object of a case and what must happen: the codes it may give, or valid. */
function buildOptions(c: OptionsCase): { input: unknown; codes: Set<ErrorCode>; expected?: Record<string, unknown>; layoutOther?: number } {
  if (c.form !== 'object') return { input: c.form, codes: new Set(['ERR_OPTIONS']) };
  const codes = new Set<ErrorCode>();
  const input: Record<string, unknown> = {};
  const set = (key: string, value: unknown) => Object.defineProperty(input, key, { value, enumerable: true, writable: true, configurable: true });

  // inChannels
  if ('missing' in c.inChannels) codes.add('ERR_OPTIONS');
  else {
    set('inChannels', c.inChannels.value);
    if ('code' in c.inChannels && c.inChannels.code) codes.add(c.inChannels.code);
  }
  // spatialDims: 2 unless a valid 3 is given
  let spatialDims = 2;
  if (c.spatialDims !== null) {
    set('spatialDims', c.spatialDims.value);
    if (c.spatialDims.code) codes.add(c.spatialDims.code);
    else spatialDims = c.spatialDims.value as number;
  }
  // arch and layers (the layers of a named VGG, or of the default network, stay shallow so that building it is cheap)
  const archDraw = c.arch;
  let archValid = true;
  let entries: ref.ArchEntry[] = spatialDims === 3 ? DEFAULT_ARCH_3D : archEntries('vgg19');
  if (archDraw !== undefined) {
    set('arch', archDraw.value);
    if ('code' in archDraw) {
      codes.add('ERR_OPTIONS');
      archValid = false;
    } else entries = archEntries(archDraw.value);
  }
  const names = ref.tapNames(entries);
  const named = archDraw === undefined || typeof archDraw.value === 'string';
  const usable = named ? names.filter((n) => VGG_SHALLOW.includes(n)) : names;
  let layers: string[] | undefined;
  let layersMode = c.layersMode;
  if (named && layersMode === 'absent') layersMode = 'valid';
  if (layersMode === 'valid') {
    layers = [...new Set(c.layersPick.map((i) => usable[i % usable.length]))];
    set('layers', layers);
  } else if (layersMode === 'invalid') {
    set('layers', c.badLayers);
    codes.add('ERR_OPTIONS');
  }
  const resolvedLayers = layers ?? defaultLayers(entries);
  // layerWeights
  let layerWeights = resolvedLayers.map(() => 1);
  if (c.weightsMode === 'array') {
    layerWeights = resolvedLayers.map((_, i) => c.weights[i % 5]);
    set('layerWeights', layerWeights);
  } else if (c.weightsMode === 'object') {
    const byName = Object.fromEntries(resolvedLayers.slice(1).map((l, i) => [l, c.weights[i]]));
    set('layerWeights', byName);
    layerWeights = resolvedLayers.map((l) => byName[l] ?? 1);
  } else if (c.weightsMode === 'invalid') {
    const bad: Record<string, unknown> = {
      wrongLength: [...resolvedLayers.map(() => 1), 1],
      negative: resolvedLayers.map((_, i) => (i === 0 ? -1 : 1)),
      nan: resolvedLayers.map((_, i) => (i === resolvedLayers.length - 1 ? NaN : 1)),
      infinite: { [resolvedLayers[0]]: Infinity },
      string: 'equal',
      unknownTap: { relu9_9: 1 },
      null: null,
      stringValue: { [resolvedLayers[0]]: '1' },
    };
    set('layerWeights', bad[c.badWeights]);
    codes.add('ERR_OPTIONS');
  }
  const expected: Record<string, unknown> = {};
  for (const draw of [c.criterion, c.featureWeight, c.styleWeight, c.reduction, c.init, c.seed, c.pool, c.checkFinite]) {
    if (draw === null) continue;
    set(draw.key, draw.value);
    if (draw.code) codes.add(draw.code);
    else expected[draw.key] = draw.value;
  }
  // layout: a name of the loss's dimensionality, or of the other one (refused), or junk
  let layoutOther: number | undefined;
  if (c.layout !== null) {
    if ('value' in c.layout) {
      set('layout', c.layout.value);
      codes.add('ERR_OPTIONS');
    } else if ('other' in c.layout) {
      layoutOther = spatialDims === 3 ? 2 : 3;
      set('layout', layoutsOf(layoutOther)[c.layout.index]);
      codes.add('ERR_OPTIONS');
    } else {
      expected.layout = layoutsOf(spatialDims)[c.layout.index];
      set('layout', expected.layout);
    }
  }
  // device, then dtype: float16/bfloat16 need CUDA
  let device = CUDA.length > 0 ? 'cuda:0' : 'cpu';
  if (c.device !== null) {
    set('device', c.device.value);
    if ('code' in c.device && c.device.code) codes.add(c.device.code);
    else if ('cuda' in c.device) {
      const index = c.device.value === 'cuda' ? 0 : Number(String(c.device.value).split(':')[1]);
      if (index >= CUDA.length) codes.add('ERR_DEVICE');
      else device = `cuda:${index}`;
    } else device = c.device.value === 'cpu' ? 'cpu' : device;
  }
  if (c.dtype !== null) {
    set('dtype', c.dtype.value);
    if ('code' in c.dtype && c.dtype.code) codes.add(c.dtype.code);
    // bfloat16 runs on the CPU where it has AVX512-BF16 or AMX-BF16.
    else if ('half' in c.dtype && device === 'cpu' && (c.dtype.value === 'float16' || !runtime().cpu.bfloat16)) codes.add('ERR_DTYPE');
    else expected.dtype = c.dtype.value;
  }
  if (c.unknown !== null) {
    set(c.unknown.key, 1);
    codes.add('ERR_OPTIONS');
  }
  // An option given as undefined is an option left out.
  for (const key of c.undefinedKeys) if (!(key in input)) set(key, undefined);
  if (!archValid) return { input, codes, layoutOther };
  return {
    input,
    codes,
    layoutOther,
    expected: {
      ...expected,
      inChannels: input.inChannels,
      spatialDims,
      layout: expected.layout ?? layoutsOf(spatialDims)[0],
      arch: archDraw === undefined ? (spatialDims === 3 ? DEFAULT_ARCH_3D : 'vgg19') : archDraw.value,
      layers: resolvedLayers,
      layerWeights,
      device,
    },
  };
}

const OPTION_DEFAULTS: Record<string, unknown> = {
  criterion: 'l2',
  featureWeight: 1,
  styleWeight: 0,
  reduction: 'mean',
  init: 'kaiming_normal',
  seed: 0,
  pool: 'max',
  dtype: 'float32',
  checkFinite: true,
};

describe('new PerceptualLoss(options)', () => {
  it('refuses every invalid options object with the code of its defect and resolves every valid one', () => {
    fc.assert(
      fc.property(
        optionsCaseArb,
        counted('options', (c) => {
          const { input, codes, expected, layoutOther } = buildOptions(c);
          if (codes.size > 0) {
            const error = expectThrowsCode(() => new PerceptualLoss(input as PerceptualLossOptions), [...codes]);
            // A layout of the other dimensionality alone: the message names the loss's own layouts.
            if (layoutOther !== undefined && codes.size === 1 && error.message.includes('"layout"')) {
              const own = layoutsOf(layoutOther === 3 ? 2 : 3);
              expect(error.message).toContain(`'${own[0]}' | '${own[1]}'`);
            }
            return;
          }
          const loss = new PerceptualLoss(input as PerceptualLossOptions);
          try {
            const resolved = loss.options as unknown as Record<string, unknown>;
            for (const [key, fallback] of Object.entries(OPTION_DEFAULTS)) {
              const want = key in expected! && expected![key] !== undefined ? expected![key] : fallback;
              expect(resolved[key], `options.${key}`).toEqual(want);
            }
            expect(resolved.inChannels).toBe(expected!.inChannels);
            expect(resolved.spatialDims).toBe(expected!.spatialDims);
            expect(resolved.layout).toBe(expected!.layout);
            expect(resolved.arch).toEqual(expected!.arch);
            expect(resolved.layers).toEqual(expected!.layers);
            expect(resolved.layerWeights).toEqual(expected!.layerWeights);
            expect(resolved.device).toBe(expected!.device);
          } finally {
            loss.dispose();
          }
        }),
      ),
      fuzzParams(FUZZ_RUNS.options),
    );
  });
});

// ================================================================== totals

describeTotals(['options']);
