// Shared pieces of the hostile-file tests (test/files/): valid safetensors files to start from, and
// the header JSON and data of such a file taken apart and put back together.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PerceptualLoss, type PerceptualLossOptions } from '../../lib/index';
import { packFloat32, writeRawSafetensors } from './safetensors';

/** A valid file and what loading it must give. */
export interface Base {
  name: string;
  file: string;
  bytes: Buffer;
  /** load() options needed (files without stored options). */
  loadOptions: Partial<PerceptualLossOptions>;
  /** name -> shape, for the architecture. */
  shapes: Map<string, number[]>;
  options: Record<string, unknown>;
}

export const BASES: Array<{ name: string; options: PerceptualLossOptions; plain?: boolean }> = [
  { name: 'two-convs', options: { inChannels: 2, arch: [3, 'M', 4], seed: 1, device: 'cpu' } },
  { name: 'pool-tap', options: { inChannels: 1, arch: [2, 2, 'M', 3], layers: ['relu1_2', 'pool1', 'conv2_1'], styleWeight: 1, criterion: 'l1', device: 'cpu' } },
  { name: 'no-metadata', options: { inChannels: 3, arch: [2, 'M', 2], seed: 9, device: 'cpu' }, plain: true },
];

/** Writes each of BASES into `dir` (as save() writes a file, or without stored options) and reads the file back. */
export function writeBases(dir: string): Base[] {
  const bases: Base[] = [];
  for (const b of BASES) {
    const loss = new PerceptualLoss(b.options);
    const file = path.join(dir, `${b.name}.safetensors`);
    if (b.plain) {
      const { header, data } = packFloat32(loss.stateDict());
      writeRawSafetensors(file, header, data);
    } else loss.save(file);
    const shapes = new Map(Object.entries(loss.stateDict()).map(([name, t]) => [name, t.shape]));
    const { device: _device, ...options } = loss.options;
    bases.push({ name: b.name, file, bytes: fs.readFileSync(file), loadOptions: b.plain ? { inChannels: b.options.inChannels, arch: b.options.arch } : {}, shapes, options });
    loss.dispose();
  }
  return bases;
}

/** The header JSON of a base, its data, and where the tensor entries start in the file. */
export function split(bytes: Buffer): { header: Record<string, unknown>; data: Buffer; headerStart: number; headerEnd: number; entriesStart: number } {
  const n = Number(bytes.readBigUInt64LE(0));
  const text = bytes.subarray(8, 8 + n).toString('utf8');
  const header = JSON.parse(text) as Record<string, unknown>;
  // save() writes __metadata__ first: byte flips stay out of it (see 'flip' in test/files/mutations.test.ts).
  const meta = header.__metadata__ === undefined ? 0 : `"__metadata__":${JSON.stringify(header.__metadata__)},`.length;
  return { header, data: bytes.subarray(8 + n), headerStart: 8, headerEnd: 8 + n, entriesStart: 8 + 1 + meta };
}

export function assemble(header: unknown, data: Buffer, pad = 0): Buffer {
  const json = Buffer.from(JSON.stringify(header) + ' '.repeat(pad), 'utf8');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([length, json, data]);
}
