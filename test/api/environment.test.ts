// The CUDA performance switches left out of the options are read from their PL_* environment
// settings (docs/api.md, "Environment variables").
import { describe, expect, it } from 'vitest';
import { resolvePerformance } from '../../lib/options';
import { expectCode } from '../helpers/expect-code';

describe('the CUDA performance settings', () => {
  it('are read from PL_* when the option is left out', () => {
    expect(resolvePerformance({}, { PL_CUDA_GRAPHS: '1', PL_ALLOW_TF32: 'off' })).toMatchObject({ cudaGraphs: true, allowTF32: false });
  });

  it('yield to the option when it is given', () => {
    expect(resolvePerformance({ cudaGraphs: false }, { PL_CUDA_GRAPHS: '1' }).cudaGraphs).toBe(false);
  });

  it('name the variable when its value cannot be read (ERR_OPTIONS)', () => {
    expectCode(() => resolvePerformance({}, { PL_TARGET_STREAM: 'maybe' }), 'ERR_OPTIONS', /^Invalid environment setting PL_TARGET_STREAM: got "maybe"/);
  });

  it('are read from process.env by default', () => {
    const before = process.env.PL_CHANNELS_LAST;
    process.env.PL_CHANNELS_LAST = 'yes';
    try {
      expect(resolvePerformance({}).channelsLast).toBe(true);
    } finally {
      if (before === undefined) delete process.env.PL_CHANNELS_LAST;
      else process.env.PL_CHANNELS_LAST = before;
    }
  });

  it('ignore GPL_* names, which no released version had', () => {
    expect(resolvePerformance({}, { GPL_CUDA_GRAPHS: '1', GPL_TARGET_STREAM: 'maybe' })).toMatchObject({ cudaGraphs: false, targetStream: false });
  });
});
