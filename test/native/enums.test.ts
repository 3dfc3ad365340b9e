// Enums cross the JS <-> native boundary by name: each native table must hold exactly the values
// the TS options schema allows, in the same order, so the two sides cannot drift apart.
import { describe, expect, it } from 'vitest';
import { native } from '../../lib/binding';
import { ERROR_CODES } from '../../lib/errors';
import { CRITERIA, DTYPES, INIT_NAMES, LAYOUTS, POOLS, REDUCTIONS } from '../../lib/options';
import { Tensor } from '../../lib/index';

const tables = native().enumTables();

describe('native enum tables', () => {
  it('criterion, reduction, pool and layout equal the schema', () => {
    expect(tables.criterion).toEqual(CRITERIA);
    expect(tables.reduction).toEqual(REDUCTIONS);
    expect(tables.pool).toEqual(POOLS);
    expect(tables.layout).toEqual(LAYOUTS);
  });

  it("init holds the named schemes and 'normal' for { normal: std }", () => {
    expect(tables.init).toEqual([...INIT_NAMES, 'normal']);
  });

  it('dtype holds the compute dtypes, then the Tensor-only ones', () => {
    expect(tables.dtype).toEqual([...DTYPES, 'int32', 'int64', 'uint8']);
  });

  it('the host arrays read back through the dtype table as the dtype they hold', () => {
    const cases: Array<[Float32Array | Float64Array | Int32Array | Uint8Array, string]> = [
      [new Float32Array(2), 'float32'],
      [new Float64Array(2), 'float64'],
      [new Int32Array(2), 'int32'],
      [new Uint8Array(2), 'uint8'],
    ];
    for (const [data, dtype] of cases) {
      using t = Tensor.from(data, [2], { device: 'cpu' });
      expect(t.dtype).toBe(dtype);
      expect(t.toArray()).toBeInstanceOf(data.constructor);
    }
  });

  it('error codes equal PerceptualLossError codes', () => {
    expect(tables.errorCode).toEqual(ERROR_CODES);
  });
});
