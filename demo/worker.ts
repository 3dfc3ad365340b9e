// A worker thread of the demo: trains the runs it is sent, one at a time, on its own tfjs engine
// (one core) and one libtorch thread, and posts progress and results back.
import { parentPort, workerData } from 'node:worker_threads';
import '@tensorflow/tfjs-backend-cpu';
import * as tf from '@tensorflow/tfjs-core';
import { setNumThreads } from 'generic-perceptual-loss';
import { ensureGradients } from './gradients';
import { trainRun, type RunSpec } from './train';

export type ToWorker = { id: number; spec: RunSpec };
export type FromWorker =
  | { type: 'progress'; id: number; step: number; loss: number }
  | { type: 'result'; id: number; result: ReturnType<typeof trainRun> }
  | { type: 'error'; id: number; message: string };

async function main(): Promise<void> {
  const port = parentPort!;
  await tf.setBackend('cpu');
  tf.enableProdMode(); // also quiets tfjs' "install tfjs-node" banner: the demo runs on tfjs-core alone
  ensureGradients();
  // tfjs' CPU backend is single-threaded and the two libraries take turns, so libtorch gains
  // little from more threads, and its OpenMP workers stall badly whenever the cores are shared.
  setNumThreads((workerData as { threads: number }).threads);
  port.on('message', ({ id, spec }: ToWorker) => {
    try {
      // A few updates per run are enough for the bars, and keep the messages cheap.
      const every = Math.max(1, Math.round(spec.steps / 50));
      const result = trainRun(spec, (step, loss) => {
        if (step % every === 0 || step === spec.steps) port.postMessage({ type: 'progress', id, step, loss } satisfies FromWorker);
      });
      port.postMessage({ type: 'result', id, result } satisfies FromWorker);
    } catch (error) {
      port.postMessage({ type: 'error', id, message: error instanceof Error ? (error.stack ?? error.message) : String(error) } satisfies FromWorker);
    }
  });
  port.postMessage({ type: 'ready' });
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
