// `npm run demo -- --study`: a protocol whose answer can be trusted, whichever way it goes.
//
// 1. Validation: on seeds of their own (never reported as results), every candidate lambda and
//    set of taps is trained, per task; the one with the best mean primary metric (seg: mIoU, depth:
//    AbsRel, vessels: Dice, instances: mask IoU) is chosen. Nothing about the held-out seeds is
//    looked at.
// 2. Held-out seeds: three arms per seed and task, with the same data, steps and initial weights:
//    the pixel loss alone, + lambda x the chosen perceptual loss, and + lambda x the paper's
//    ablation (one conv block: the structure kept, the depth removed).
// 3. Per metric and task: the mean and 95% t-interval of each arm over the seeds, and the paired
//    per-seed differences with theirs.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DEFAULTS, TASKS, type DemoArgs, type TaskName } from './args';
import { pairedSpec, type PairedPoint } from './charts';
import { BATCH, METRICS, oneBlockFor, perceptualFor, provenance, runSpec } from './config';
import { setup, trainWithProgress } from './runs';
import { render, writeJson } from './report';
import { interval, type Interval } from './stats';
import type { PerceptualSpec, RunResult, RunSpec } from './train';

export const VALIDATION_SEEDS = [1001, 1002];
export const TEST_SEEDS = [1, 2, 3, 4, 5];
/** The candidates of the validation step, the same for every task: lambda, and all taps or the first two blocks'. */
export const LAMBDAS = [1, 3];
export const TAPS = (task: TaskName): string[][] => [perceptualFor(task).layers, ['relu1_2', 'relu2_2']];
/** What validation maximises (or minimises): each task's usual overlap or error score. */
export const PRIMARY: Record<TaskName, { key: string; higher: boolean }> = {
  seg: { key: 'miou', higher: true },
  depth: { key: 'absRel', higher: false },
  vessels: { key: 'dice', higher: true },
  instances: { key: 'maskIoU', higher: true },
};
const TASK_HEADINGS: Record<TaskName, string> = { seg: 'Segmentation', depth: 'Depth', vessels: 'Vessels (3-D)', instances: 'Instance masks' };
/** What one run of a task trains on, in words. */
const trainedOn = (task: TaskName, args: DemoArgs) =>
  task === 'vessels'
    ? `${args.volume.join('x')} volumes, ${args.steps[task]} steps of ${BATCH[task]} volumes, ${args.testVolumes} held-out volumes`
    : `${args.size}x${args.size} images, ${args.steps[task]} steps of ${BATCH[task]} ${task === 'instances' ? 'instance masks' : 'images'}, ${args.testImages} held-out images`;

const ARMS = ['pixel', 'perceptual', 'one block'] as const;
type ArmKind = (typeof ARMS)[number];
const COMPARISONS: Array<{ name: string; a: ArmKind; b: ArmKind }> = [
  { name: 'perceptual - pixel', a: 'perceptual', b: 'pixel' },
  { name: 'one block - pixel', a: 'one block', b: 'pixel' },
  { name: 'perceptual - one block', a: 'perceptual', b: 'one block' },
];

const f3 = (v: number) => (Math.abs(v) < 0.0005 && v !== 0 ? v.toExponential(1) : v.toFixed(3));
const show = (i: Interval) => `${f3(i.mean)} [${f3(i.lo)}, ${f3(i.hi)}]`;

interface Choice {
  lambda: number;
  layers: string[];
  /** Mean primary metric over the validation seeds, per candidate. */
  candidates: Array<{ lambda: number; layers: string[]; mean: number }>;
}

function choose(task: TaskName, runs: RunResult[]): Choice {
  const { key, higher } = PRIMARY[task];
  const candidates = LAMBDAS.flatMap((lambda) =>
    TAPS(task).map((layers) => {
      const mine = runs.filter((r) => r.spec.task === task && r.spec.lambda === lambda && r.spec.perceptual!.layers.join() === layers.join());
      return { lambda, layers, mean: mine.reduce((s, r) => s + r.final[key], 0) / mine.length };
    }),
  );
  const best = candidates.reduce((a, b) => ((higher ? b.mean > a.mean : b.mean < a.mean) ? b : a));
  return { lambda: best.lambda, layers: best.layers, candidates };
}

/**
 * Trains the specs, reusing the results of earlier runs of the same specs kept in `dir`: a run is
 * a function of its spec, and a study interrupted after hours keeps what it finished.
 */
async function trainCached(specs: RunSpec[], args: DemoArgs, dir: string): Promise<RunResult[]> {
  fs.mkdirSync(dir, { recursive: true });
  const file = (spec: RunSpec) => path.join(dir, `${createHash('sha256').update(JSON.stringify(spec)).digest('hex').slice(0, 16)}.json`);
  const kept = specs.map((spec) => (fs.existsSync(file(spec)) ? (JSON.parse(fs.readFileSync(file(spec), 'utf8')) as RunResult) : null));
  const missing = specs.filter((_, i) => kept[i] === null);
  if (missing.length < specs.length) console.log(`Reusing ${specs.length - missing.length} finished runs from ${dir}.`);
  const trained = await trainWithProgress(missing, args, (r) => writeJson(file(r.spec), r));
  let next = 0;
  return kept.map((r) => r ?? trained[next++]);
}

export async function runStudy(args: DemoArgs, start: number): Promise<void> {
  const out = path.resolve(args.out);
  fs.mkdirSync(out, { recursive: true });
  // Read before training: a commit made during a long study must not be credited with its numbers.
  const prov = provenance();
  const validation: RunSpec[] = args.tasks.flatMap((task) =>
    VALIDATION_SEEDS.flatMap((seed) => LAMBDAS.flatMap((lambda) => TAPS(task).map((layers) => runSpec(args, task, seed, lambda, { ...perceptualFor(task), layers }, false)))),
  );
  // The pixel-only arms need no choice: they train alongside the validation runs.
  const baselines: RunSpec[] = args.tasks.flatMap((task) => TEST_SEEDS.map((seed) => runSpec(args, task, seed, 0, null, false)));
  console.log(
    `Study: ${args.tasks.map((t) => `${t} (${trainedOn(t, args)})`).join(' + ')}; validation seeds ${VALIDATION_SEEDS.join(', ')} ` +
      `(lambda ${LAMBDAS.join(', ')} x all taps or the first two blocks'), held-out seeds ${TEST_SEEDS.join(', ')}.`,
  );
  console.log(`${validation.length + baselines.length + 2 * baselines.length} runs on ${args.workers} workers.\n`);
  const runs = path.join(out, 'runs');
  const first = await trainCached([...validation, ...baselines], args, runs);
  const validated = first.slice(0, validation.length);
  const choices = Object.fromEntries(args.tasks.map((task) => [task, choose(task, validated)])) as Record<TaskName, Choice>;
  for (const task of args.tasks) {
    console.log(`${task}: chose lambda ${choices[task].lambda}, taps ${choices[task].layers.join(', ')} on the validation seeds.`);
  }
  const chosen = (task: TaskName): PerceptualSpec => ({ ...perceptualFor(task), layers: choices[task].layers });
  const second: RunSpec[] = args.tasks.flatMap((task) =>
    TEST_SEEDS.flatMap((seed) => [runSpec(args, task, seed, choices[task].lambda, chosen(task), false), runSpec(args, task, seed, choices[task].lambda, oneBlockFor(task), false)]),
  );
  const rest = await trainCached(second, args, runs);
  const held = [...first.slice(validation.length), ...rest];
  const kind = (r: RunResult): ArmKind =>
    r.spec.perceptual === null ? 'pixel' : r.spec.perceptual.arch.length === oneBlockFor(r.spec.task).arch.length ? 'one block' : 'perceptual';
  const seconds = (performance.now() - start) / 1000;

  // Per task, metric and arm: the values in seed order; then the summaries.
  const summary: Record<string, unknown> = {};
  const points: PairedPoint[] = [];
  const lines: string[] = [];
  lines.push('# Study: does the random-weight perceptual loss help, and is depth what matters?', '');
  // The flags that differ from the defaults, so the command can be run again as it was.
  const flags = [
    TASKS.some((t) => args.steps[t] !== DEFAULTS.steps[t]) ? ` --steps ${args.steps[args.tasks[0]]}` : '',
    args.size !== DEFAULTS.size ? ` --size ${args.size}` : '',
    args.volume.join('x') !== DEFAULTS.volume.join('x') ? ` --volume ${args.volume.join('x')}` : '',
    args.tasks.join() !== TASKS.join() ? ` --task ${args.tasks.join(',')}` : '',
  ].join('');
  lines.push(
    `Made by \`npm run demo -- --study${flags} --out ${args.out}\` ` +
      `at commit \`${prov.commit ?? 'unknown'}\`${prov.dirty ? ' (with uncommitted changes)' : ''}, on ${prov.machine.cpu} (${prov.machine.cores} cores), ` +
      `${args.workers} workers of ${args.threads} libtorch thread each. It took ${(seconds / 60).toFixed(1)} min.`,
    '',
  );
  lines.push(
    `Every run: ${args.tasks.map((t) => `${t}: ${trainedOn(t, args)}`).join('; ')}; the networks and losses of the default demo. ` +
      `Validation seeds ${VALIDATION_SEEDS.join(', ')} chose lambda from ${LAMBDAS.join(', ')} and the taps (all of the task's perceptual network's, or those of its first two blocks) ` +
      `by the mean ${args.tasks.map((t) => `${PRIMARY[t].key} (${t})`).join(', ')}; the held-out seeds ${TEST_SEEDS.join(', ')} were not looked at until then. ` +
      `"one block" is the paper's ablation, the first block of the task's perceptual network (${args.tasks.map((t) => `${t}: ${JSON.stringify(oneBlockFor(t).arch)}`).join(', ')}, tap relu1_2), at the chosen lambda. ` +
      `Intervals are 95% Student-t intervals over the ${TEST_SEEDS.length} held-out seeds; a difference is paired by seed (same data, initial weights and perceptual seed).`,
    '',
  );
  for (const task of args.tasks) {
    const c = choices[task];
    lines.push(`## ${TASK_HEADINGS[task]}`, '');
    lines.push(`Validation (mean ${PRIMARY[task].key} over seeds ${VALIDATION_SEEDS.join(', ')}):`, '');
    lines.push('| lambda | taps | mean |', '| --- | --- | --- |');
    for (const k of c.candidates) lines.push(`| ${k.lambda} | ${k.layers.join(', ')} | ${f3(k.mean)} |`);
    lines.push('', `Chosen: lambda ${c.lambda}, taps ${c.layers.join(', ')}.`, '');
    lines.push(`| metric | ${ARMS.join(' | ')} | ${COMPARISONS.map((k) => k.name).join(' | ')} |`);
    lines.push(`| --- | ${ARMS.map(() => '---').join(' | ')} | ${COMPARISONS.map(() => '---').join(' | ')} |`);
    const perSeed: string[] = [];
    const taskSummary: Record<string, unknown> = {};
    for (const m of METRICS[task]) {
      const values = Object.fromEntries(
        ARMS.map((a) => [a, TEST_SEEDS.map((seed) => held.find((r) => r.spec.task === task && r.spec.seed === seed && kind(r) === a)!.final[m.key])]),
      ) as Record<ArmKind, number[]>;
      const arms = Object.fromEntries(ARMS.map((a) => [a, interval(values[a])])) as Record<ArmKind, Interval>;
      const diffs = Object.fromEntries(
        COMPARISONS.map((k) => {
          const d = values[k.a].map((v, i) => v - values[k.b][i]);
          const iv = interval(d);
          d.forEach((diff, i) => points.push({ metric: `${task}: ${m.label}${m.higher ? '' : ' (lower is better)'}`, comparison: k.name, seed: TEST_SEEDS[i], diff, ...iv }));
          return [k.name, { perSeed: d, ...iv }];
        }),
      );
      taskSummary[m.key] = { higherIsBetter: m.higher, values, arms, differences: diffs };
      lines.push(`| ${m.label}${m.higher ? '' : ' (lower better)'} | ${ARMS.map((a) => show(arms[a])).join(' | ')} | ${COMPARISONS.map((k) => show(diffs[k.name])).join(' | ')} |`);
      perSeed.push(`| ${m.label} | ${TEST_SEEDS.map((_, i) => ARMS.map((a) => f3(values[a][i])).join(' / ')).join(' | ')} |`);
    }
    lines.push('', `Per held-out seed (${ARMS.join(' / ')}):`, '');
    lines.push(`| metric | ${TEST_SEEDS.map((s) => `seed ${s}`).join(' | ')} |`, `| --- | ${TEST_SEEDS.map(() => '---').join(' | ')} |`, ...perSeed, '');
    summary[task] = { choice: c, metrics: taskSummary };
  }
  lines.push('![paired per-seed differences](paired.png)', '');
  lines.push('Each dot is one held-out seed\'s difference; the tick is the mean, the bar its 95% interval; the dashed line is no difference.', '');
  fs.writeFileSync(path.join(out, 'study.md'), `${lines.join('\n')}\n`);
  writeJson(path.join(out, 'study.json'), {
    protocol: {
      validationSeeds: VALIDATION_SEEDS,
      testSeeds: TEST_SEEDS,
      lambdas: LAMBDAS,
      taps: Object.fromEntries(args.tasks.map((t) => [t, TAPS(t)])),
      primary: PRIMARY,
      steps: args.steps,
      size: args.size,
      volume: args.volume,
      testImages: args.testImages,
      testVolumes: args.testVolumes,
    },
    config: setup(args),
    summary,
    runs: [...validated, ...held].map((r) => ({ task: r.spec.task, seed: r.spec.seed, name: r.spec.name, lambda: r.spec.lambda, perceptual: r.spec.perceptual, final: r.final, evals: r.evals, seconds: r.seconds })),
    timing: { totalSeconds: seconds },
    provenance: prov,
  });
  const metrics = [...new Set(points.map((p) => p.metric))];
  render({ plots: [{ file: path.join(out, 'paired.png'), spec: pairedSpec(`Paired differences over ${TEST_SEEDS.length} held-out seeds`, points, metrics, COMPARISONS.map((k) => k.name)) }], grids: [] });
  console.log(`\n${lines.join('\n')}`);
  console.log(`Wrote ${path.join(args.out, 'study.md')}, study.json and paired.png. Done in ${(seconds / 60).toFixed(1)} min.`);
}
