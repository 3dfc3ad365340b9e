// Memory of one lossAndGrad step for the CPU benchmark, each figure in a FRESH process: load,
// build the loss, one warm-up step, fresh inputs, VmRSS; then VmHWM is reset to the current RSS
// (clear_refs 5) so that it holds this step's peak only, one step runs, and VmHWM is read.
// Reported: VmHWM after minus VmRSS before. Run twice: with glibc's defaults (as shipped) and with
// a fixed mmap threshold (CLEAN_MALLOC_ENV), where freed tensors go back to the OS and the figure is
// the step's live working set rather than what the warm-up left cached in malloc's arenas.
'use strict';

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');

// glibc keeps freed blocks once its dynamic mmap threshold has grown, which hides a step's peak
// behind memory retained from the warm-up step. A fixed threshold makes every block >= 64 KiB an
// mmap of its own, unmapped on free, so RSS tracks live memory (the "clean" figure).
const CLEAN_MALLOC_ENV = { MALLOC_MMAP_THRESHOLD_: '65536', MALLOC_TRIM_THRESHOLD_: '131072' };

function readStatusKiB(field) {
  const m = fs.readFileSync('/proc/self/status', 'utf8').match(new RegExp(`^${field}:\\s*(\\d+)`, 'm'));
  if (!m) throw new Error(`${field} not in /proc/self/status`);
  return Number(m[1]);
}

function resetHwm() {
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5'); // Linux >= 4.0: VmHWM := current RSS
    return true;
  } catch {
    return false;
  }
}

function runMemoryChild(cmd, args, env) {
  let stdout;
  try {
    stdout = execFileSync(cmd, args, { cwd: ROOT, encoding: 'utf8', env: { ...process.env, ...env }, timeout: 300_000, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    throw new Error(`memory child ${cmd} ${args.join(' ')} failed (${e.signal || `code ${e.status}`}):\n${String(e.stderr || e.message).slice(-3000)}`);
  }
  const last = stdout.trim().split('\n').pop();
  try {
    return JSON.parse(last);
  } catch {
    throw new Error(`memory child ${cmd} ${args.join(' ')} printed no JSON: ${stdout.slice(-500)}`);
  }
}

/**
 * Every side's step peak at every shape, in both malloc modes. `sides`: { name, cmd, args(shape,
 * threads) -> argv, env }; a side whose child fails is recorded with its error, not dropped.
 */
function measureMemory(sides, shapes, threads, progress) {
  const out = [];
  for (const shape of shapes) {
    for (const [mode, mallocEnv] of [['clean', CLEAN_MALLOC_ENV], ['glibcDefault', {}]]) {
      for (const side of sides) {
        try {
          const r = runMemoryChild(side.cmd, side.args(shape, threads), { ...side.env, ...mallocEnv });
          out.push({ ...r, side: side.name, shape, mode, env: mallocEnv, stepPeakMiB: (r.hwmAfterKiB - r.rssBeforeKiB) / 1024, baselineMiB: r.rssBeforeKiB / 1024 });
          progress(`memory ${shape} (${mode}) ${side.name}: +${((r.hwmAfterKiB - r.rssBeforeKiB) / 1024).toFixed(1)} MiB`);
        } catch (e) {
          // The child's stderr (its last lines) says why; the first line only names the command.
          const why = e.message.split('\n').slice(1).filter(Boolean).slice(-3).join(' | ');
          out.push({ side: side.name, shape, mode, error: e.message.split('\n')[0], stderrTail: e.message.slice(-3000) });
          progress(`memory ${shape} (${mode}) ${side.name}: failed: ${e.message.split('\n')[0]}${why ? `\n  ${why}` : ''}`);
        }
      }
    }
  }
  return out;
}

module.exports = { CLEAN_MALLOC_ENV, measureMemory, readStatusKiB, resetHwm };
