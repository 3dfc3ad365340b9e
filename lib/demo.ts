// `npm run demo`: the loss and gradient of a sample prediction against its target.
import { performance } from 'node:perf_hooks';
import { PerceptualLoss, runtime } from './index';

const SIZE = 96;
const CHANNELS = 3;

/** A deterministic target (discs and stripes) and a degraded prediction of it (blur + noise). */
function sample(): { target: Float32Array; pred: Float32Array } {
  const target = new Float32Array(CHANNELS * SIZE * SIZE);
  for (let c = 0; c < CHANNELS; c++) {
    for (let y = 0; y < SIZE; y++) {
      for (let x = 0; x < SIZE; x++) {
        const disc = (x - 30 - 10 * c) ** 2 + (y - 40) ** 2 < 400 ? 1 : 0;
        const stripe = Math.floor((x + 2 * y) / 12) % 2 === c % 2 ? 0.5 : 0;
        target[(c * SIZE + y) * SIZE + x] = disc + stripe;
      }
    }
  }
  let seed = 1;
  const noise = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31 - 0.5) * 0.2;
  const pred = new Float32Array(target.length);
  for (let c = 0; c < CHANNELS; c++) {
    for (let y = 0; y < SIZE; y++) {
      for (let x = 0; x < SIZE; x++) {
        let sum = 0;
        let n = 0;
        for (let dy = -2; dy <= 2; dy++) {
          for (let dx = -2; dx <= 2; dx++) {
            const yy = y + dy;
            const xx = x + dx;
            if (yy < 0 || yy >= SIZE || xx < 0 || xx >= SIZE) continue;
            sum += target[(c * SIZE + yy) * SIZE + xx];
            n++;
          }
        }
        pred[(c * SIZE + y) * SIZE + x] = sum / n + noise();
      }
    }
  }
  return { target, pred };
}

function main(): void {
  const info = runtime();
  console.log(`libtorch ${info.libtorch.version} (${info.libtorch.path}), devices: ${info.devices.join(', ')}, ${info.numThreads} CPU threads`);
  const loss = new PerceptualLoss({ inChannels: CHANNELS });
  const { arch, layers, criterion, init, seed, device } = loss.options;
  console.log(`random-weight ${arch}, taps ${layers.join(', ')}, ${criterion}, ${init} init, seed ${seed}, on ${device}`);

  const { target, pred } = sample();
  const shape = [1, CHANNELS, SIZE, SIZE];
  const times: number[] = [];
  let result = loss.lossAndGrad({ data: pred, shape }, { data: target, shape });
  for (let i = 0; i < 5; i++) {
    const start = performance.now();
    result = loss.lossAndGrad({ data: pred, shape }, { data: target, shape });
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  const gradNorm = Math.sqrt((result.grad as Float32Array).reduce((s, g) => s + g * g, 0));

  console.log(`\nprediction ${shape.join('x')} vs target:`);
  console.log(`  loss          ${(result.loss as number).toPrecision(6)}`);
  console.log(`  |grad|        ${gradNorm.toPrecision(6)}`);
  console.log('  per-layer terms (featureWeight x layerWeight x D):');
  for (const term of result.terms) console.log(`    ${term.name.padEnd(8)} ${term.feature.toPrecision(6)}`);
  console.log(`  time          ${times[2].toFixed(1)} ms per loss + gradient (median of 5)`);
  loss.dispose();
}

main();
