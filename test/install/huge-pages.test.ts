// libtorch's large CPU buffers as transparent huge pages under THP_MEM_ALLOC_ENABLE=1: libtorch
// 2.x does it itself, and for 1.13, which predates the setting, the package's allocator does
// (native/huge_page_allocator.h). Off by default, as in PyTorch. The allocator is chosen once, as
// the addon loads: the child processes below load the package fresh.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runtime } from '../../lib/index';

const DIST = path.resolve(__dirname, '../../dist/index.js');
const major = Number(runtime().libtorch.version.split('.')[0]);
const thpMode = (() => {
  try {
    return fs.readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8').match(/\[(\w+)\]/)?.[1];
  } catch {
    return undefined;
  }
})();

/** In a fresh process with THP_MEM_ALLOC_ENABLE as given: runtime()'s flag, a 64 MiB Tensor's huge pages, and a volume step. */
function child(setting: string | undefined) {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.THP_MEM_ALLOC_ENABLE;
  if (setting !== undefined) env.THP_MEM_ALLOC_ENABLE = setting;
  const script = `
    const fs = require('node:fs');
    const { PerceptualLoss, Tensor, runtime } = require(${JSON.stringify(DIST)});
    const hugeKiB = () => Number(fs.readFileSync('/proc/self/smaps_rollup', 'utf8').match(/AnonHugePages:\\s+(\\d+)/)[1]);
    const before = hugeKiB();
    const held = Tensor.from(new Float32Array(16 << 20).fill(1), [16 << 20]);
    const hugePagesKiB = hugeKiB() - before;
    held.dispose();
    const shape = [1, 1, 16, 16, 16];
    const pred = Float32Array.from({ length: 4096 }, (_, i) => Math.sin(i));
    const target = Float32Array.from({ length: 4096 }, (_, i) => Math.cos(i));
    const { loss, grad } = new PerceptualLoss({ inChannels: 1, spatialDims: 3 }).lossAndGrad({ data: pred, shape }, { data: target, shape });
    process.stdout.write(JSON.stringify({ flag: runtime().cpu.hugePages, hugePagesKiB, loss, grad: Buffer.from(grad.buffer).toString('base64') }));
  `;
  return JSON.parse(execFileSync(process.execPath, ['-e', script], { env, encoding: 'utf8' })) as {
    flag: boolean;
    hugePagesKiB: number;
    loss: number;
    grad: string;
  };
}

describe('transparent huge pages for large CPU buffers', () => {
  it('runtime().cpu.hugePages says whether they are in force: with THP_MEM_ALLOC_ENABLE=1 only', () => {
    expect(runtime().cpu.hugePages).toBe(process.env.THP_MEM_ALLOC_ENABLE === '1');
  });

  it.runIf(major < 2)('libtorch 1.x: THP_MEM_ALLOC_ENABLE=1 turns them on; a step gives bit-identical results either way', () => {
    const on = child('1');
    const off = child(undefined);
    expect(on.flag).toBe(true);
    expect(off.flag).toBe(false);
    expect(off.loss).toBe(on.loss);
    expect(off.grad).toBe(on.grad);
  });

  it.runIf(major < 2 && thpMode === 'madvise')('libtorch 1.x, a kernel whose THP is madvise: a 64 MiB Tensor lies on huge pages with THP_MEM_ALLOC_ENABLE=1, and not without', () => {
    expect(child('1').hugePagesKiB).toBeGreaterThan(0);
    expect(child(undefined).hugePagesKiB).toBe(0);
  });
});
