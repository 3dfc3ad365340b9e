// The one options schema: defaults, validation, and the resolved form the native core takes.
import { PerceptualLossError, show } from './errors';
import { DEFAULT_ARCH_3D, defaultLayers, describeNetwork, VGG_CONFIGS, type ArchName, type ModuleInfo, type SpatialDims } from './network';
import { checkObject, invalidOption, nonNegative, oneOf, pick } from './validate';

export type { ArchName, SpatialDims } from './network';
export type ArchSpec = ArchName | ReadonlyArray<number | 'M'>;
export type Criterion = 'l1' | 'l2' | 'smooth_l1';
export type Reduction = 'mean' | 'sum' | 'none';
export type InitScheme = 'kaiming_normal' | 'kaiming_uniform' | 'xavier_normal' | 'xavier_uniform' | { normal: number };
export type PoolKind = 'max' | 'avg';
export type DeviceSpec = 'auto' | 'cpu' | 'cuda' | `cuda:${number}`;
/** A device a loss or a Tensor is on: what a DeviceSpec resolves to. */
export type Device = 'cpu' | `cuda:${number}`;
export type Dtype = 'float32' | 'float64' | 'float16' | 'bfloat16';
/** 'nchw' and 'nhwc' for images (spatialDims 2); 'ncdhw' and 'ndhwc' for volumes (spatialDims 3). */
export type Layout = 'nchw' | 'nhwc' | 'ncdhw' | 'ndhwc';

export interface PerceptualLossOptions extends Partial<PerformanceOptions> {
  /** Channels of pred and target: 3 for RGB, 1 for depth, the class count for segmentation. */
  inChannels: number;
  /** 2 for images ([N, C, H, W], the default), 3 for volumes ([N, C, D, H, W]: 3x3x3 convs, 2x2x2 pools). */
  spatialDims?: SpatialDims;
  /** Default: 'vgg19' in 2-D, DEFAULT_ARCH_3D (five convs) in 3-D. */
  arch?: ArchSpec;
  /** Tap names such as `relu3_4`; default: the last ReLU of each block. */
  layers?: readonly string[];
  /** One weight per tap, in `layers` order, or by tap name (missing names weigh 1). */
  layerWeights?: readonly number[] | Readonly<Record<string, number>>;
  criterion?: Criterion;
  featureWeight?: number;
  /** Weight of the Gram-matrix (style) term; 0 skips it. */
  styleWeight?: number;
  reduction?: Reduction;
  init?: InitScheme;
  seed?: number;
  pool?: PoolKind;
  device?: DeviceSpec;
  /** Compute precision. */
  dtype?: Dtype;
  /** Default: 'nchw' in 2-D, 'ncdhw' in 3-D. */
  layout?: Layout;
  /** Reject NaN/Inf inputs with ERR_NONFINITE. */
  checkFinite?: boolean;
}

/** The CUDA performance switches: options, or environment settings when the option is left out. */
export interface PerformanceOptions {
  /** CUDA: let cuDNN time its algorithms per shape (process-wide). Env PL_CUDNN_BENCHMARK. */
  cudnnBenchmark: boolean;
  /** CUDA: compute in channels-last (NHWC) memory format. Env PL_CHANNELS_LAST. */
  channelsLast: boolean;
  /** CUDA: capture a step as a CUDA graph once its shape repeats; recaptured on a new shape. Env PL_CUDA_GRAPHS. */
  cudaGraphs: boolean;
  /** CUDA: compute the target's features on a second stream, alongside pred's. Env PL_TARGET_STREAM. */
  targetStream: boolean;
  /** CUDA: allow TF32 in float32 cuDNN convolutions (PyTorch's default; process-wide). Env PL_ALLOW_TF32. */
  allowTF32: boolean;
}

/** An option's row in the docs' options table. */
interface OptionDoc {
  values: string;
  default: string;
}

/** A performance switch: its environment setting, its default and what it does. */
interface SwitchDoc {
  env: string;
  fallback: boolean;
  does: string;
}

/**
 * Every option of `new PerceptualLoss()`, declared once: the known options are these keys, and
 * docs/api.md's options table is made from these rows (a test holds the two equal). The
 * `satisfies` clauses make the compiler reject an option declared in PerceptualLossOptions and
 * not here, or here and not there.
 */
const CORE_OPTIONS = {
  inChannels: { values: 'integer from 1 to 65536 (required): 3 for RGB, 1 for depth, the class count for segmentation', default: '—' },
  spatialDims: {
    values: '`2`: images, `[N, C, H, W]`; `3`: volumes, `[N, C, D, H, W]`, with 3x3x3 convs and 2x2x2 pools (see [Volumes (3-D)](#volumes-3-d))',
    default: '`2`',
  },
  arch: {
    values: "`'vgg11'`, `'vgg13'`, `'vgg16'`, `'vgg19'`, or an array of conv widths and `'M'` (a pool) with at least one conv",
    default:
      "`'vgg19'`; with `spatialDims: 3`, `[64, 'M', 128, 'M', 256, 'M', 512, 'M', 512]`: five convs of VGG's widths, one per block, " +
      'as about five conv layers did best for random-weight 3-D losses (Pfaehler et al., PLOS ONE 2025), at a fraction of the cost of vgg19 in 3-D',
  },
  layers: { values: 'tap names (see [The network](#the-network)), each at most once', default: 'the last ReLU of each block' },
  layerWeights: { values: 'one finite number >= 0 per tap, as an array in `layers` order or as `{ [tap]: weight }` (taps left out weigh 1)', default: 'all 1' },
  criterion: { values: "`'l1'`, `'l2'`, `'smooth_l1'`", default: "`'l2'`" },
  featureWeight: { values: 'finite number >= 0', default: '1' },
  styleWeight: { values: 'finite number >= 0: weight of the Gram-matrix term, 0 skips it', default: '0' },
  reduction: { values: "`'mean'`, `'sum'`, `'none'`", default: "`'mean'`" },
  init: { values: "`'kaiming_normal'`, `'kaiming_uniform'`, `'xavier_normal'`, `'xavier_uniform'`, or `{ normal: std }` with std > 0", default: "`'kaiming_normal'`" },
  seed: { values: 'integer from 0 to 2^53 - 1', default: '0' },
  pool: { values: "`'max'`, `'avg'`", default: "`'max'`" },
  device: { values: "`'auto'` (the first CUDA device, else the CPU), `'cpu'`, `'cuda'`, `'cuda:N'`", default: "`'auto'`" },
  dtype: {
    values: "`'float32'`, `'float64'`; `'bfloat16'` on CUDA and on CPUs with AVX512-BF16 or AMX (detected at run time); `'float16'` on CUDA",
    default: "`'float32'`",
  },
  layout: {
    values: "`'nchw'`, `'nhwc'` with `spatialDims: 2`; `'ncdhw'`, `'ndhwc'` with `spatialDims: 3`",
    default: "`'nchw'`; `'ncdhw'` with `spatialDims: 3`",
  },
  checkFinite: { values: '`true`: NaN or Inf in an input throws `ERR_NONFINITE`; `false` lets them propagate', default: '`true`' },
} as const satisfies { readonly [K in Exclude<keyof PerceptualLossOptions, keyof PerformanceOptions>]-?: OptionDoc };

/** Each switch, its environment setting and its default (the safe one until a GPU run measures otherwise). */
const SWITCHES = {
  cudnnBenchmark: { env: 'PL_CUDNN_BENCHMARK', fallback: false, does: 'cuDNN times its algorithms per shape (process-wide)' },
  channelsLast: { env: 'PL_CHANNELS_LAST', fallback: false, does: 'computes in channels-last memory format' },
  cudaGraphs: { env: 'PL_CUDA_GRAPHS', fallback: false, does: 'captures a step as a CUDA graph once its shape repeats' },
  targetStream: { env: 'PL_TARGET_STREAM', fallback: false, does: "computes the target's features on a second stream" },
  allowTF32: { env: 'PL_ALLOW_TF32', fallback: true, does: 'allows TF32 in float32 cuDNN convolutions (process-wide)' },
} as const satisfies { readonly [K in keyof PerformanceOptions]: SwitchDoc };

export const PERFORMANCE_SWITCHES: ReadonlyArray<{ option: keyof PerformanceOptions; env: string; fallback: boolean }> = (
  Object.keys(SWITCHES) as Array<keyof PerformanceOptions>
).map((option) => ({ option, env: SWITCHES[option].env, fallback: SWITCHES[option].fallback }));

const KNOWN_OPTIONS: ReadonlySet<string> = new Set([...Object.keys(CORE_OPTIONS), ...Object.keys(SWITCHES)]);

/** docs/api.md's options table, as Markdown: one row per option, the switches last. */
export function optionsTable(): string {
  const rows = [
    '| option | values | default |',
    '| --- | --- | --- |',
    ...Object.entries(CORE_OPTIONS).map(([name, doc]) => `| \`${name}\` | ${doc.values} | ${doc.default} |`),
    ...Object.entries(SWITCHES).map(
      ([name, s]) => `| \`${name}\` | \`true\`, \`false\`: CUDA only, ${s.does}; left out, read from \`${s.env}\` | \`${s.fallback}\` |`,
    ),
  ];
  return rows.join('\n');
}

const ENV_TRUE = ['1', 'true', 'on', 'yes'];
const ENV_FALSE = ['0', 'false', 'off', 'no'];

/** The switches from `raw` options, falling back to `env` (process.env), then to the defaults. */
export function resolvePerformance(raw: Record<string, unknown>, env: Record<string, string | undefined> = process.env): PerformanceOptions {
  const result = {} as PerformanceOptions;
  for (const { option, env: name, fallback } of PERFORMANCE_SWITCHES) {
    const value = raw[option];
    if (value !== undefined) {
      if (typeof value !== 'boolean') invalidOption(option, value, 'true | false');
      result[option] = value;
      continue;
    }
    const setting = env[name];
    const text = setting?.trim().toLowerCase();
    if (text === undefined || text === '') result[option] = fallback;
    else if (ENV_TRUE.includes(text)) result[option] = true;
    else if (ENV_FALSE.includes(text)) result[option] = false;
    else {
      throw new PerceptualLossError(
        'ERR_OPTIONS',
        `Invalid environment setting ${name}: got ${show(setting)}; allowed: ${[...ENV_TRUE, ...ENV_FALSE].join(', ')}, or unset.`,
      );
    }
  }
  return result;
}

/**
 * The options with every default filled in; `device` is the device actually used. The performance
 * switches have no effect on the CPU.
 */
export type ResolvedOptions = Omit<Required<PerceptualLossOptions>, 'arch' | 'layers' | 'layerWeights' | 'device'> & {
  arch: ArchName | Array<number | 'M'>;
  layers: string[];
  layerWeights: number[];
  device: Device;
};

// The allowed values; they cross to native code by name (a test holds native's tables equal to these).
export const CRITERIA: readonly Criterion[] = ['l1', 'l2', 'smooth_l1'];
export const REDUCTIONS: readonly Reduction[] = ['mean', 'sum', 'none'];
export const INIT_NAMES = ['kaiming_normal', 'kaiming_uniform', 'xavier_normal', 'xavier_uniform'] as const;
export const POOLS: readonly PoolKind[] = ['max', 'avg'];
export const DTYPES: readonly Dtype[] = ['float32', 'float64', 'float16', 'bfloat16'];
/** Every layout name, as native code's table holds them: the 2-D ones, then the 3-D ones. */
export const LAYOUTS: readonly Layout[] = ['nchw', 'nhwc', 'ncdhw', 'ndhwc'];
export const SPATIAL_DIMS: readonly SpatialDims[] = [2, 3];

/** The layouts of inputs with `spatialDims` spatial axes, channels first, then channels last. */
export function layoutsOf(spatialDims: SpatialDims): readonly Layout[] {
  return spatialDims === 3 ? ['ncdhw', 'ndhwc'] : ['nchw', 'nhwc'];
}

/** Whether the channels are the last axis: 'nhwc' and 'ndhwc'. */
export function channelsLast(layout: Layout): boolean {
  return layout === 'nhwc' || layout === 'ndhwc';
}

export function validateSeed(value: unknown, option = 'seed'): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    invalidOption(option, value, `an integer from 0 to ${Number.MAX_SAFE_INTEGER}`);
  }
  return value;
}

function resolveArch(value: unknown, spatialDims: SpatialDims): { arch: ResolvedOptions['arch']; config: ReadonlyArray<number | 'M'> } {
  if (value === undefined) return spatialDims === 3 ? { arch: [...DEFAULT_ARCH_3D], config: DEFAULT_ARCH_3D } : { arch: 'vgg19', config: VGG_CONFIGS.vgg19 };
  if (typeof value === 'string' && value in VGG_CONFIGS) {
    return { arch: value as ArchName, config: VGG_CONFIGS[value as ArchName] };
  }
  const allowed = `${oneOf(Object.keys(VGG_CONFIGS))}, or an array of conv widths (integers >= 1) and 'M' with at least one conv`;
  if (!Array.isArray(value) || value.length === 0) invalidOption('arch', value, allowed);
  const entries: unknown[] = value;
  const isEntry = (v: unknown): v is number | 'M' => v === 'M' || (typeof v === 'number' && Number.isSafeInteger(v) && v >= 1 && v <= 65536);
  if (!entries.every(isEntry) || !entries.some((v) => v !== 'M')) invalidOption('arch', value, allowed);
  const config = [...entries];
  return { arch: config, config };
}

function resolveInit(value: unknown): InitScheme {
  if (value === undefined) return 'kaiming_normal';
  if (typeof value === 'string' && (INIT_NAMES as readonly string[]).includes(value)) return value as InitScheme;
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const keys = Object.keys(value);
    const std = (value as { normal?: unknown }).normal;
    if (keys.length === 1 && typeof std === 'number' && Number.isFinite(std) && std > 0) return { normal: std };
  }
  return invalidOption('init', value, `${oneOf(INIT_NAMES)} or { normal: std } with std > 0`);
}

/**
 * Why a CUDA device cannot be had, and the fix: `cudaBuild` says whether the loaded libtorch is a
 * CUDA build (undefined: not known).
 */
function noCudaDevice(cudaBuild: boolean | undefined): string {
  const instead = "or use device: 'cpu' or 'auto'";
  if (cudaBuild === false) {
    return (
      'the loaded libtorch is a CPU-only build (see runtime().libtorch, or npx generic-perceptual-loss doctor). For a GPU, ' +
      'install a CUDA build of PyTorch, for example pip install torch --index-url https://download.pytorch.org/whl/cu130, so that ' +
      `python3's torch is found, or point LIBTORCH at a CUDA libtorch folder; ${instead}.`
    );
  }
  if (cudaBuild === true) {
    return (
      'the loaded libtorch is a CUDA build but sees no CUDA device: check the NVIDIA driver (nvidia-smi) and ' +
      `CUDA_VISIBLE_DEVICES (an empty value or a wrong index hides every GPU); ${instead}.`
    );
  }
  return `the loaded libtorch sees no CUDA device; use device: 'cpu' or 'auto'.`;
}

export function resolveDevice(value: unknown, cudaDevices: number, cudaBuild?: boolean): Device {
  const spec = value === undefined ? 'auto' : value;
  const allowed = `'auto' | 'cpu' | 'cuda' | 'cuda:N'`;
  if (typeof spec !== 'string') invalidOption('device', spec, allowed);
  if (spec === 'cpu') return 'cpu';
  if (spec === 'auto') return cudaDevices > 0 ? 'cuda:0' : 'cpu';
  const match = /^cuda(?::(\d+))?$/.exec(spec);
  if (!match) invalidOption('device', spec, allowed);
  const index = match[1] === undefined ? 0 : Number(match[1]);
  if (cudaDevices === 0) {
    throw new PerceptualLossError('ERR_DEVICE', `Device ${show(spec)} was requested, but ${noCudaDevice(cudaBuild)}`);
  }
  if (index >= cudaDevices) {
    throw new PerceptualLossError(
      'ERR_DEVICE',
      `Device ${show(spec)} is out of range: ${cudaDevices} CUDA device(s), cuda:0 to cuda:${cudaDevices - 1}.`,
    );
  }
  return `cuda:${index}`;
}

function resolveLayers(value: unknown, modules: readonly ModuleInfo[], archLabel: string): string[] {
  if (value === undefined) return defaultLayers(modules);
  const names = modules.map((m) => m.name);
  const allowedText = `tap names of ${archLabel}: conv{b}_{i}, relu{b}_{i} or pool{b}, from ${names[0]} to ${names[names.length - 1]}`;
  if (!Array.isArray(value) || value.length === 0) invalidOption('layers', value, `a non-empty array of ${allowedText}`);
  const layers: unknown[] = value;
  const seen = new Set<string>();
  for (const layer of layers) {
    if (typeof layer !== 'string') invalidOption('layers', value, `a non-empty array of ${allowedText}`);
    if (!/^(conv\d+_\d+|relu\d+_\d+|pool\d+)$/.test(layer)) {
      invalidOption('layers', layer, `a tap name (conv{b}_{i}, relu{b}_{i} or pool{b}) of ${archLabel}`);
    }
    if (!names.includes(layer)) invalidOption('layers', layer, allowedText);
    if (seen.has(layer)) invalidOption('layers', value, 'each tap at most once');
    seen.add(layer);
  }
  return [...seen];
}

function resolveLayerWeights(value: unknown, layers: readonly string[]): number[] {
  if (value === undefined) return layers.map(() => 1);
  const isWeight = (w: unknown): w is number => typeof w === 'number' && Number.isFinite(w) && w >= 0;
  if (Array.isArray(value)) {
    if (value.length !== layers.length || !value.every(isWeight)) {
      invalidOption('layerWeights', value, `an array of ${layers.length} finite numbers >= 0, one per tap (${layers.join(', ')})`);
    }
    return [...value];
  }
  if (value !== null && typeof value === 'object') {
    const byName = value as Record<string, unknown>;
    for (const [name, weight] of Object.entries(byName)) {
      if (!layers.includes(name)) invalidOption('layerWeights', name, `weights for the taps in use: ${layers.join(', ')}`);
      if (!isWeight(weight)) invalidOption(`layerWeights.${name}`, weight, 'a finite number >= 0');
    }
    return layers.map((name) => (byName[name] as number | undefined) ?? 1);
  }
  return invalidOption('layerWeights', value, 'an array with one weight per tap or an object { [tap]: weight }');
}


/** What the native core needs to know of the options: the resolved ones it shares, by the same names. */
export type NativeConfig = Pick<
  ResolvedOptions,
  'inChannels' | 'spatialDims' | 'criterion' | 'featureWeight' | 'styleWeight' | 'reduction' | 'pool' | 'dtype' | 'checkFinite' | 'seed' | keyof PerformanceOptions
> & {
  /** Conv widths, 0 for a pool. */
  arch: number[];
  tapModules: number[];
  tapWeights: number[];
  /** A scheme's name; 'normal' for { normal: std }, with initStd. */
  init: (typeof INIT_NAMES)[number] | 'normal';
  initStd: number;
  device: string;
};

export interface Resolved {
  options: ResolvedOptions;
  modules: ModuleInfo[];
  /** The modules actually built: cut after the deepest tap. */
  kept: ModuleInfo[];
  /** Smallest size of each spatial axis (H and W, or D, H and W) that reaches the deepest tap. */
  minSize: number;
  native: NativeConfig;
}

/**
 * `cudaBuild`: whether the loaded libtorch is a CUDA build, for the message of a CUDA device it
 * cannot reach (left out: not said).
 * `cpuBfloat16Missing`: what this CPU (and libtorch) lacks for bfloat16, '' where it has it; the
 * native core reads it with cpuid at run time.
 */
export function resolveOptions(input: unknown, cudaDevices: number, cpuBfloat16Missing = 'a check of the CPU (not made)', cudaBuild?: boolean): Resolved {
  checkObject(input, 'Options', '{ inChannels: 3 }');
  const raw = input as Record<string, unknown>;
  for (const key of Object.keys(raw)) {
    if (!KNOWN_OPTIONS.has(key)) invalidOption(key, raw[key], `one of the known options: ${[...KNOWN_OPTIONS].join(', ')} (unknown option)`);
  }
  const { inChannels } = raw;
  if (typeof inChannels !== 'number' || !Number.isSafeInteger(inChannels) || inChannels < 1 || inChannels > 65536) {
    invalidOption('inChannels', inChannels, 'an integer >= 1 (required): 3 for RGB, 1 for depth, the class count for segmentation');
  }
  const spatialDims = resolveSpatialDims(raw.spatialDims);
  const { arch, config } = resolveArch(raw.arch, spatialDims);
  const modules = describeNetwork(config, inChannels);
  const archLabel = typeof arch === 'string' ? arch : 'the custom arch';
  const layers = resolveLayers(raw.layers, modules, archLabel);
  const layerWeights = resolveLayerWeights(raw.layerWeights, layers);
  const criterion = pick('criterion', raw.criterion, CRITERIA, 'l2');
  const featureWeight = nonNegative('featureWeight', raw.featureWeight, 1);
  const styleWeight = nonNegative('styleWeight', raw.styleWeight, 0);
  const reduction = pick('reduction', raw.reduction, REDUCTIONS, 'mean');
  const init = resolveInit(raw.init);
  const seed = raw.seed === undefined ? 0 : validateSeed(raw.seed);
  const pool = pick('pool', raw.pool, POOLS, 'max');
  const device = resolveDevice(raw.device, cudaDevices, cudaBuild);
  const dtype = pick('dtype', raw.dtype, DTYPES, 'float32');
  if (dtype === 'float16' && device === 'cpu') {
    throw new PerceptualLossError(
      'ERR_DTYPE',
      `dtype ${show(dtype)} is for CUDA devices; on the CPU use 'float32', 'float64' or 'bfloat16' (with AVX512-BF16 or AMX).`,
    );
  }
  if (dtype === 'bfloat16' && device === 'cpu' && cpuBfloat16Missing !== '') {
    throw new PerceptualLossError(
      'ERR_DTYPE',
      `dtype ${show(dtype)} on the CPU needs ${cpuBfloat16Missing}; use 'float32' or 'float64' here, or a CUDA device.`,
    );
  }
  const layout = resolveLayout(raw.layout, layoutsOf(spatialDims)[0], spatialDims);
  if (raw.checkFinite !== undefined && typeof raw.checkFinite !== 'boolean') invalidOption('checkFinite', raw.checkFinite, 'true | false');
  const checkFinite = raw.checkFinite ?? true;
  const performance = resolvePerformance(raw);

  const tapModules = layers.map((name) => modules.find((m) => m.name === name)!.index);
  const deepest = Math.max(...tapModules);
  const kept = modules.slice(0, deepest + 1);
  const options: ResolvedOptions = {
    inChannels, spatialDims, arch, layers, layerWeights, criterion, featureWeight, styleWeight, reduction, init, seed, pool,
    device, dtype, layout, checkFinite, ...performance,
  };
  const native: NativeConfig = {
    inChannels,
    spatialDims,
    arch: config.map((v) => (v === 'M' ? 0 : v)),
    tapModules,
    tapWeights: layerWeights,
    criterion,
    featureWeight,
    styleWeight,
    reduction,
    init: typeof init === 'string' ? init : 'normal',
    initStd: typeof init === 'string' ? 0 : init.normal,
    pool,
    device,
    dtype,
    checkFinite,
    seed,
    ...performance,
  };
  return { options, modules, kept, minSize: 2 ** modules[deepest].poolsSoFar, native };
}

function resolveSpatialDims(value: unknown): SpatialDims {
  if (value === undefined) return 2;
  if (!(SPATIAL_DIMS as readonly unknown[]).includes(value)) invalidOption('spatialDims', value, '2 (images, the default) | 3 (volumes)');
  return value as SpatialDims;
}

/**
 * A layout of the loss's `spatialDims` (the option, or a call's override), or `fallback` when left
 * out. A name of the other dimensionality is refused with the right names.
 */
export function resolveLayout(value: unknown, fallback: Layout, spatialDims: SpatialDims): Layout {
  if (value === undefined) return fallback;
  const own = layoutsOf(spatialDims);
  if (typeof value === 'string' && (own as readonly string[]).includes(value)) return value as Layout;
  const other = layoutsOf(spatialDims === 3 ? 2 : 3);
  const isOther = typeof value === 'string' && (other as readonly string[]).includes(value);
  if (spatialDims === 3) {
    const why = isOther ? ` (${show(value)} is a layout of 2-D images)` : '';
    return invalidOption('layout', value, `${oneOf(own)} for spatialDims: 3: [N, C, D, H, W] is 'ncdhw', [N, D, H, W, C] is 'ndhwc'${why}`);
  }
  const why = isOther ? `; ${show(value)} is a layout of volumes: build the loss with spatialDims: 3 for it` : `, or ${oneOf(other)} with spatialDims: 3`;
  return invalidOption('layout', value, `${oneOf(own)} for spatialDims: 2 (images)${why}`);
}
