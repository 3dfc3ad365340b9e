// The network's description: torchvision's VGG configurations, the named modules of the
// torchvision-style Sequential they make, and the state-dict layout. Pure data, no libtorch.

export type ArchName = 'vgg11' | 'vgg13' | 'vgg16' | 'vgg19';

/** 2 for images ([N, C, H, W]), 3 for volumes ([N, C, D, H, W]). */
export type SpatialDims = 2 | 3;

/** torchvision's VGG configurations (`torchvision.models.vgg.cfgs` A, B, D, E). */
export const VGG_CONFIGS: Record<ArchName, ReadonlyArray<number | 'M'>> = {
  vgg11: [64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
  vgg13: [64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
  vgg16: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'],
  vgg19: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M'],
};

/**
 * The default arch of a 3-D loss: five 3x3x3 convs of VGG's widths, one per block, so that every
 * default tap (relu1_1 ... relu5_1) follows a pool. Pfaehler et al. (PLOS ONE 2025, arXiv
 * 2411.05884) found about five conv layers best for random-weight 3-D perceptual losses, depth and
 * pooling to matter, and small networks at least as good as VGG; in 3-D, vgg19's sixteen convs
 * cost many times as much time and memory.
 */
export const DEFAULT_ARCH_3D: ReadonlyArray<number | 'M'> = [64, 'M', 128, 'M', 256, 'M', 512, 'M', 512];

/** One named module of the torchvision-style Sequential. */
export interface ModuleInfo {
  index: number;
  name: string;
  kind: 'conv' | 'relu' | 'pool';
  /** Pools at or before this module: each spatial axis (H and W, or D, H and W) must be at least 2 ** poolsSoFar. */
  poolsSoFar: number;
  inChannels?: number;
  outChannels?: number;
}

/** The modules of `arch` (conv widths and 'M'), named conv{b}_{i}, relu{b}_{i}, pool{b}. */
export function describeNetwork(arch: ReadonlyArray<number | 'M'>, inChannels: number): ModuleInfo[] {
  const modules: ModuleInfo[] = [];
  let block = 1;
  let conv = 0;
  let pools = 0;
  let channels = inChannels;
  for (const entry of arch) {
    if (entry === 'M') {
      pools += 1;
      modules.push({ index: modules.length, name: `pool${block}`, kind: 'pool', poolsSoFar: pools });
      block += 1;
      conv = 0;
      continue;
    }
    conv += 1;
    const shape = { inChannels: channels, outChannels: entry };
    modules.push({ index: modules.length, name: `conv${block}_${conv}`, kind: 'conv', poolsSoFar: pools, ...shape });
    modules.push({ index: modules.length, name: `relu${block}_${conv}`, kind: 'relu', poolsSoFar: pools });
    channels = entry;
  }
  return modules;
}

/**
 * torchvision's state-dict entries of the convs among `modules`, in conv order (weight, bias): a
 * weight is [Cout, Cin, 3, 3] in 2-D (Conv2d) and [Cout, Cin, 3, 3, 3] in 3-D (Conv3d).
 */
export function stateDictLayout(modules: readonly ModuleInfo[], spatialDims: SpatialDims): Array<{ name: string; shape: number[] }> {
  const kernel = new Array<number>(spatialDims).fill(3);
  return modules
    .filter((m) => m.kind === 'conv')
    .flatMap((conv) => [
      { name: `features.${conv.index}.weight`, shape: [conv.outChannels!, conv.inChannels!, ...kernel] },
      { name: `features.${conv.index}.bias`, shape: [conv.outChannels!] },
    ]);
}

/** The last ReLU of each block. */
export function defaultLayers(modules: readonly ModuleInfo[]): string[] {
  const layers: string[] = [];
  modules.forEach((m, i) => {
    const next = modules[i + 1];
    if (m.kind === 'relu' && (next === undefined || next.kind === 'pool')) layers.push(m.name);
  });
  return layers;
}

/**
 * The taps of `layers` that an input whose smallest spatial side is `size` reaches (each pool
 * before a tap halves every spatial axis); where none does, the deepest ReLU it reaches.
 */
export function tapsWithin(modules: readonly ModuleInfo[], layers: readonly string[], size: number): string[] {
  const fits = (m: ModuleInfo | undefined) => m !== undefined && 2 ** m.poolsSoFar <= size;
  const kept = layers.filter((name) => fits(modules.find((m) => m.name === name)));
  if (kept.length > 0) return kept;
  const relus = modules.filter((m) => m.kind === 'relu' && fits(m));
  return relus.length > 0 ? [relus[relus.length - 1].name] : [];
}
