// A minimal, deliberately permissive safetensors writer for tests: it writes whatever header it is
// given (wrong offsets, overlaps, bad lengths), so tests can build exactly the broken file they need.
import * as fs from 'node:fs';

export interface RawEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/** Writes `u64 header length | JSON header | data`, as the safetensors format lays it out. */
export function writeRawSafetensors(
  file: string,
  header: Record<string, RawEntry | Record<string, string>>,
  data: Uint8Array,
  options: { headerLength?: bigint } = {},
): void {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(options.headerLength ?? BigInt(json.length), 0);
  fs.writeFileSync(file, Buffer.concat([length, json, data]));
}

/** The header (JSON) and data bytes of a safetensors file. */
export function readRawSafetensors(file: string): { header: Record<string, unknown>; data: Buffer } {
  const bytes = fs.readFileSync(file);
  const length = Number(bytes.readBigUInt64LE(0));
  return { header: JSON.parse(bytes.subarray(8, 8 + length).toString('utf8')) as Record<string, unknown>, data: bytes.subarray(8 + length) };
}

/** The bytes of float32 arrays laid end to end, with their entries. */
export function packFloat32(arrays: Record<string, { shape: number[]; data: Float32Array }>): {
  header: Record<string, RawEntry>;
  data: Uint8Array;
} {
  const header: Record<string, RawEntry> = {};
  const chunks: Buffer[] = [];
  let offset = 0;
  for (const [name, { shape, data }] of Object.entries(arrays)) {
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + data.byteLength] };
    chunks.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    offset += data.byteLength;
  }
  return { header, data: Buffer.concat(chunks) };
}
