// Runs the demo's arms side by side: a few worker threads (one core each) take the runs in order.
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { RunResult, RunSpec } from './train';
import type { FromWorker } from './worker';

export interface PoolEvents {
  onStart?(index: number, spec: RunSpec): void;
  onProgress?(index: number, step: number, loss: number): void;
  onResult?(index: number, result: RunResult): void;
}

/** Trains every spec on `workers` threads; the results come back in the specs' order. */
export async function runAll(specs: RunSpec[], workers: number, threads: number, events: PoolEvents = {}): Promise<RunResult[]> {
  const results = new Array<RunResult>(specs.length);
  let next = 0;
  const count = Math.max(1, Math.min(workers, specs.length));
  const pool: Worker[] = [];
  const one = () =>
    new Promise<void>((resolve, reject) => {
      const worker = new Worker(path.join(__dirname, 'worker.js'), { workerData: { threads } });
      pool.push(worker);
      let current = -1;
      const feed = () => {
        if (next >= specs.length) {
          void worker.terminate().then(() => resolve());
          return;
        }
        current = next++;
        events.onStart?.(current, specs[current]);
        worker.postMessage({ id: current, spec: specs[current] });
      };
      worker.on('message', (message: FromWorker | { type: 'ready' }) => {
        if (message.type === 'ready') feed();
        else if (message.type === 'progress') events.onProgress?.(message.id, message.step, message.loss);
        else if (message.type === 'result') {
          results[message.id] = message.result;
          events.onResult?.(message.id, message.result);
          feed();
        } else {
          void worker.terminate();
          reject(new Error(`Run ${specs[message.id].task} / ${specs[message.id].name} (seed ${specs[message.id].seed}) failed:\n${message.message}`));
        }
      });
      worker.on('error', reject);
      worker.on('exit', (code) => {
        if (code !== 0 && current !== -1 && results[current] === undefined) reject(new Error(`A demo worker exited with code ${code}.`));
      });
    });
  try {
    await Promise.all(Array.from({ length: count }, one));
  } catch (error) {
    // One run failed: stop the others, or their threads would keep the process alive.
    await Promise.all(pool.map((w) => w.terminate()));
    throw error;
  }
  return results;
}
