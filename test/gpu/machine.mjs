// The GPU suite's record of the machine: card, driver, CUDA, PyTorch, compilers, the pack's commit.
// Prints JSON on stdout (scripts/gpu-suite.sh writes it to $OUT/machine.json).
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const args = process.argv.slice(2);
const mode = args[args.indexOf('--mode') + 1] ?? 'gpu';
const pack = args[args.indexOf('--pack') + 1];

function tryRun(cmd, argv) {
  try {
    return execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 }).trim();
  } catch {
    return null;
  }
}

const firstLine = (text) => (text ? text.split('\n')[0] : null);
const python = process.env.PL_PYTHON ?? (mode === 'cpu' ? '/usr/bin/python3' : 'python3');
const torchProbe = `
import json, torch
cuda = torch.cuda.is_available()
print(json.dumps({
  "version": torch.__version__, "cuda": torch.version.cuda, "available": cuda,
  "cudnn": torch.backends.cudnn.version() if cuda else None,
  "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
  "capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else None,
  "cmake_prefix_path": torch.utils.cmake_prefix_path,
}))`;
const torchText = tryRun(python, ['-c', torchProbe]);
const torch = torchText ? JSON.parse(torchText.split('\n').pop()) : null;
const smi = tryRun('nvidia-smi', ['--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit', '--format=csv,noheader']);
const [cardName, driver, memory, maxClock, power] = smi ? smi.split('\n')[0].split(',').map((s) => s.trim()) : [];
const manifest = pack ? JSON.parse(fs.readFileSync(path.join(pack, 'manifest.json'), 'utf8')) : {};

const facts = {
  mode,
  date: new Date().toISOString(),
  commit: manifest.commit ?? null,
  dirty: manifest.dirty ?? null,
  card: cardName ?? null,
  driver: driver ?? null,
  memory: memory ?? null,
  maxSmClock: maxClock ?? null,
  powerLimit: power ?? null,
  gpus: smi ? smi.split('\n').length : 0,
  torch,
  nvcc: tryRun('nvcc', ['--version'])?.split('\n').filter((l) => /release/.test(l))[0] ?? null,
  cmake: firstLine(tryRun('cmake', ['--version'])),
  ninja: tryRun('ninja', ['--version']),
  gcc: firstLine(tryRun('g++', ['--version'])),
  python: tryRun(python, ['--version']),
  node: process.version,
  cpus: os.cpus().length,
  cpuModel: os.cpus()[0]?.model ?? null,
  memoryBytes: os.totalmem(),
};
facts.summary = mode === 'cpu'
  ? `CPU dry run on ${facts.cpus} x ${facts.cpuModel}, torch ${torch?.version ?? 'missing'}, node ${facts.node}`
  : `${facts.card ?? 'no card'} (driver ${facts.driver}, ${facts.memory}), torch ${torch?.version} CUDA ${torch?.cuda} cuDNN ${torch?.cudnn}, ${facts.nvcc ?? 'no nvcc'}, ${facts.cmake}, ninja ${facts.ninja ?? 'absent'}, ${facts.gcc}, node ${facts.node}`;
if (mode === 'gpu' && !(torch && torch.available)) {
  console.error(`machine: no usable CUDA PyTorch: ${JSON.stringify(torch)}`);
  console.log(JSON.stringify(facts, null, 2));
  process.exit(1);
}
console.log(JSON.stringify(facts, null, 2));
