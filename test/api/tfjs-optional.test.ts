// @tensorflow/tfjs-core is an optional peer dependency: without it, the main entry works and the
// tfjs entry says what to install. Its own file, so that no earlier require() of tfjs-core in this
// process has been cached.
import Module from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

type Resolve = (request: string, ...rest: unknown[]) => string;
const internals = Module as unknown as { _resolveFilename: Resolve };
const original = internals._resolveFilename;

describe('without @tensorflow/tfjs-core', () => {
  beforeAll(() => {
    // As if the package were not installed: Node's own error for a missing module.
    internals._resolveFilename = function (this: unknown, request: string, ...rest: unknown[]) {
      if (request === '@tensorflow/tfjs-core' || request.startsWith('@tensorflow/tfjs-core/')) {
        throw Object.assign(new Error(`Cannot find module '${request}'`), { code: 'MODULE_NOT_FOUND' });
      }
      return original.call(this, request, ...rest);
    };
  });
  afterAll(() => {
    internals._resolveFilename = original;
  });

  it('the main entry loads and computes a loss', async () => {
    const { PerceptualLoss } = await import('../../lib/index');
    const loss = new PerceptualLoss({ inChannels: 1, arch: [4], device: 'cpu' });
    const data = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i));
    expect(loss.loss({ data, shape: [1, 1, 8, 8] }, { data: data.map((v) => v / 2), shape: [1, 1, 8, 8] })).toBeGreaterThan(0);
    loss.dispose();
  });

  it.each(['tfjsPerceptualLoss', 'tfjsSegmentationLoss'] as const)('%s throws MODULE_NOT_FOUND naming what to install', async (name) => {
    const tfjs = await import('../../lib/tfjs');
    const { PerceptualLoss } = await import('../../lib/index');
    const loss = new PerceptualLoss({ inChannels: 1, arch: [4], device: 'cpu' });
    let error: (Error & { code?: string; cause?: unknown }) | undefined;
    try {
      tfjs[name](loss);
    } catch (e) {
      error = e as Error;
    }
    loss.dispose();
    expect(error).toBeInstanceOf(Error);
    expect(error!.code).toBe('MODULE_NOT_FOUND');
    expect(error!.message).toBe(
      'generic-perceptual-loss/tfjs needs @tensorflow/tfjs-core (an optional peer dependency): ' +
        'npm install @tensorflow/tfjs-core (or @tensorflow/tfjs, or @tensorflow/tfjs-node).',
    );
    expect((error!.cause as Error).message).toBe("Cannot find module '@tensorflow/tfjs-core'");
  });
});
