// save() and load(): a loss's weights and portable options in a safetensors file, and the file
// read back into resolved options and conv weights checked against the architecture.
import { fileURLToPath } from 'node:url';
import { PerceptualLossError, show } from './errors';
import { stateDictLayout } from './network';
import { PERFORMANCE_SWITCHES, resolveOptions, type PerceptualLossOptions, type Resolved, type ResolvedOptions } from './options';
import { readSafetensors, writeSafetensors, type NamedArray } from './safetensors';
import { checkObject, optionOf } from './validate';

/** The metadata key that holds the options. */
const OPTIONS_KEY = 'generic-perceptual-loss';

/** A file's contents, ready to build a loss from: nothing is resolved twice, no weight drawn to be replaced. */
export interface LoadedFile {
  /** The file's options under the caller's. */
  merged: PerceptualLossOptions;
  resolved: Resolved;
  /** Weight and bias of each kept conv, in conv order. */
  weights: Float32Array[];
}

/** Writes `stateDict` and the options that belong to the file (not the device or the switches). */
export function saveLoss(
  target: string | URL,
  stateDict: Record<string, { shape: number[]; data: Float32Array }>,
  options: Readonly<ResolvedOptions>,
): void {
  const file = filePath(target, 'save');
  const arrays: NamedArray[] = Object.entries(stateDict).map(([name, a]) => ({ name, ...a }));
  // The device and the performance switches belong to the machine, not to the file.
  const portable: Partial<ResolvedOptions> = { ...options };
  for (const key of ['device', ...PERFORMANCE_SWITCHES.map((s) => s.option)] as const) delete portable[key];
  writeSafetensors(file, arrays, { format: 'pt', [OPTIONS_KEY]: JSON.stringify(portable) });
}

/**
 * Reads a file written by save() (or any safetensors file with the right names and shapes).
 * `options` override the stored ones; `cudaDevices`, `cpuBfloat16Missing` and `cudaBuild` as resolveOptions takes them.
 */
export function readLossFile(
  source: string | URL,
  options: Partial<PerceptualLossOptions>,
  cudaDevices: number,
  cpuBfloat16Missing: string,
  cudaBuild?: boolean,
): LoadedFile {
  const file = filePath(source, 'PerceptualLoss.load');
  checkObject(options, 'PerceptualLoss.load options');
  const { tensors, metadata } = readSafetensors(file);
  let stored: Partial<PerceptualLossOptions> = {};
  const text = metadata[OPTIONS_KEY];
  if (text !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new PerceptualLossError('ERR_FILE', `${file}: the stored options are not valid JSON.`);
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new PerceptualLossError('ERR_FILE', `${file}: the stored options are not an object.`);
    }
    // Checked by resolveOptions below, as the caller's options are.
    stored = parsed;
  }
  // Other taps than the stored ones keep the stored weights of the taps they share.
  if (Array.isArray(options.layers) && options.layerWeights === undefined && Array.isArray(stored.layers) && Array.isArray(stored.layerWeights)) {
    const byName = new Map(stored.layers.map((name, i) => [name, (stored.layerWeights as number[])[i]]));
    // (The names themselves are checked by resolveOptions below.)
    const layers = options.layers as readonly string[];
    stored.layerWeights = Object.fromEntries(layers.filter((l) => byName.has(l)).map((l) => [l, byName.get(l)!]));
  }
  checkSpatialDims(file, text !== undefined, stored, options);
  const merged = { ...stored, ...options } as PerceptualLossOptions;
  let resolved: Resolved;
  try {
    resolved = resolveOptions(merged, cudaDevices, cpuBfloat16Missing, cudaBuild);
  } catch (error) {
    // An invalid option that came from the file makes a bad file; the caller's own stay ERR_OPTIONS.
    const option = optionOf(error);
    if (text !== undefined && option !== undefined && !Object.hasOwn(options, option)) {
      throw new PerceptualLossError('ERR_FILE', `${file}: the stored options are invalid: ${(error as Error).message}`, { cause: error });
    }
    throw error;
  }
  // The file must hold this architecture's tensors before the network is built: a small file
  // cannot make the loader build a network larger than itself.
  return { merged, resolved, weights: weightsFor(file, resolved, tensors) };
}

/**
 * A file's network is 2-D or 3-D for good: options that ask for the other are refused before
 * anything else is read from them. A file with stored options but no spatialDims was saved before
 * volumes existed: 2-D.
 */
function checkSpatialDims(file: string, hasStored: boolean, stored: Partial<PerceptualLossOptions>, options: Partial<PerceptualLossOptions>): void {
  const asked = options.spatialDims;
  if (!hasStored || asked === undefined) return;
  const held: unknown = stored.spatialDims ?? 2;
  // An invalid stored value is resolveOptions' to report.
  if (held === asked || (held !== 2 && held !== 3)) return;
  const weight = held === 3 ? '[Cout, Cin, 3, 3, 3]' : '[Cout, Cin, 3, 3]';
  throw new PerceptualLossError(
    'ERR_FILE',
    `${file} holds a ${held}-D network (spatialDims: ${show(held)}, weights ${weight}); it cannot be loaded with spatialDims: ${show(asked)}. ` +
      `Leave spatialDims out to load it as it is.`,
  );
}

/** A path string, or a file: URL as fs takes it; never a descriptor number or another scheme. */
function filePath(file: unknown, what: string): string {
  if (typeof file === 'string') return file;
  if (file instanceof URL) {
    if (file.protocol !== 'file:') {
      throw new PerceptualLossError('ERR_FILE', `${what} takes a file path or a file: URL; got the ${file.protocol} URL ${file.href}.`);
    }
    return fileURLToPath(file);
  }
  throw new PerceptualLossError('ERR_FILE', `${what} takes a file path (a string); got ${show(file)}.`);
}

/** The file's arrays in conv order, checked against the architecture (names and shapes). */
function weightsFor(file: string, resolved: Resolved, tensors: Map<string, NamedArray>): Float32Array[] {
  const { spatialDims } = resolved.options;
  const expected = stateDictLayout(resolved.kept, spatialDims);
  const missing = expected.filter(({ name }) => !tensors.has(name)).map(({ name }) => name);
  // Convs past the cut belong to the architecture too (a file saved with deeper taps): skipped.
  const known = new Set(stateDictLayout(resolved.modules, spatialDims).map(({ name }) => name));
  const extra = [...tensors.keys()].filter((name) => !known.has(name));
  if (missing.length > 0 || extra.length > 0) {
    throw new PerceptualLossError(
      'ERR_FILE',
      `${file} does not match the architecture: ` +
        [missing.length ? `missing ${missing.join(', ')}` : '', extra.length ? `unexpected ${extra.join(', ')}` : ''].filter(Boolean).join('; ') +
        '.',
    );
  }
  return expected.map(({ name, shape }) => {
    const got = tensors.get(name)!;
    if (got.shape.length !== shape.length || got.shape.some((d, i) => d !== shape[i])) {
      // A Conv2d weight where a Conv3d one is needed, or the other way round: the file's spatialDims.
      const rank = got.shape.length === 4 && shape.length === 5 ? 2 : got.shape.length === 5 && shape.length === 4 ? 3 : undefined;
      const hint = rank === undefined ? '' : ` It is a ${rank}-D network's weight: load it with spatialDims: ${rank}.`;
      throw new PerceptualLossError('ERR_FILE', `${file}: ${name} has shape ${show(got.shape)} but the architecture needs ${show(shape)}.${hint}`);
    }
    return got.data;
  });
}
