// vitest setup file: with PL_TEST_FLAVOUR=<flavour> (see test/helpers/flavours.ts), the suites
// load that flavour's prebuild (prebuilds/<flavour>, from `npm run prebuilds`) and compare with
// that flavour's PyTorch. The local build in build/Release is for another libtorch, so the
// loader passes it over. Every file first checks that the flavour is what got loaded.
import { beforeAll, expect } from 'vitest';
import { selectedFlavour } from './flavours';

const selected = selectedFlavour();
if (selected) {
  delete process.env.LIBTORCH;
  delete process.env.LIBTORCH_PYTHON;
  delete process.env.LIBTORCH_USE_PYTORCH;
  Object.assign(process.env, selected.env, { PL_REFERENCE_PYTHON: selected.python });
  beforeAll(async () => {
    const { runtime } = await import('../../lib/index');
    expect(runtime().libtorch.flavour).toBe(selected.flavour);
    expect(runtime().binaryReason).toMatch(selected.reason);
  });
}
