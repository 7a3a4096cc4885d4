// The idle collector: one full collection once a thread goes quiet after
// work, none while it stays busy, none again until there is new work.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { spawn } from 'node:child_process';
import { IdleCollector, canTrim } from '../../src/idle-gc.ts';

const PERIOD = 100;

// The collector's timer does not keep a thread alive; the tests must.
let keepAlive: NodeJS.Timeout;
test.before(() => {
  keepAlive = setInterval(() => {}, 1000);
});
test.after.always(() => clearInterval(keepAlive));

/** Keeps this thread's event loop busy (spinning in macrotasks) until stopped. */
function spin(): () => void {
  let on = true;
  const step = () => {
    const until = performance.now() + 20;
    while (performance.now() < until);
    if (on) setImmediate(step);
  };
  setImmediate(step);
  return () => (on = false);
}

type Ev = { k: 'check'; elu: number } | { k: 'collect'; ms: number; before: number; after: number };

function record(c: IdleCollector): Ev[] {
  const evs: Ev[] = [];
  c.on('check', (elu) => evs.push({ k: 'check', elu }));
  c.on('collect', ({ ms, heapBefore, heapAfter }) => evs.push({ k: 'collect', ms, before: heapBefore, after: heapAfter }));
  return evs;
}

async function checks(c: IdleCollector, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await once(c, 'check');
}

test.serial('a busy thread is not collected; once it goes quiet it is, once', async (t) => {
  const c = new IdleCollector(PERIOD);
  const evs = record(c);
  // Kept alive through the busy period (so it reaches the old generation,
  // which only a full collection clears), let go just before the quiet one.
  const junk = Array.from({ length: 200_000 }, (_, i) => ({ i, s: `item ${i}` }));
  const stop = spin();
  await checks(c, 4);
  t.deepEqual(evs.filter((e) => e.k === 'collect'), [], 'no collection while busy');
  t.true(evs.every((e) => e.k === 'check' && e.elu >= 0.05));
  t.is(junk.length, 200_000);
  junk.length = 0;
  stop();
  const [collected] = (await once(c, 'collect')) as [{ ms: number; heapBefore: number; heapAfter: number }];
  t.true(collected.heapBefore - collected.heapAfter > 5 * 2 ** 20, `the collection freed the dropped objects: heap ${collected.heapBefore} -> ${collected.heapAfter}`);
  // Quiet from here on: no second collection without new work.
  const from = evs.length;
  await checks(c, 4);
  const after = evs.slice(from);
  const collects = after.filter((e) => e.k === 'collect').length;
  t.true(collects === 0 || after.some((e) => e.k === 'check' && e.elu >= 0.05), 'no collection without work in between');
  c.stop();
});

test.serial('new work after a collection leads to another one', async (t) => {
  const c = new IdleCollector(PERIOD);
  await once(c, 'collect'); // the first quiet period after start
  const stop = spin();
  await checks(c, 2);
  stop();
  const [again] = await once(c, 'collect');
  t.true(again.ms >= 0);
  c.stop();
});

test.serial('each collection comes after a quiet period, and between two of them there was work', async (t) => {
  const c = new IdleCollector(PERIOD);
  const evs = record(c);
  for (let i = 0; i < 2; i++) {
    const stop = spin();
    await checks(c, 2);
    stop();
    await once(c, 'collect');
  }
  c.stop();
  let workSinceLast = true;
  for (let i = 0; i < evs.length; i++) {
    const e = evs[i];
    if (e.k === 'check' && e.elu >= 0.05) workSinceLast = true;
    if (e.k === 'collect') {
      const prev = evs[i - 1];
      t.true(prev?.k === 'check' && prev.elu < 0.05, 'preceded by a quiet check');
      t.true(workSinceLast, 'work since the last collection');
      workSinceLast = false;
    }
  }
  t.is(evs.filter((e) => e.k === 'collect').length >= 2, true);
});

test.serial('threads starting collectors at the same time all get the gc function', async (t) => {
  // The acceptor and its workers create their collectors at start, at once.
  const url = new URL('../../src/idle-gc.ts', import.meta.url).href;
  const code = `const { parentPort } = require('node:worker_threads');
    import(${JSON.stringify(url)}).then((m) => { for (let i = 0; i < 200; i++) new m.IdleCollector(1000).stop(); parentPort.postMessage('ok'); },
      (err) => parentPort.postMessage(String(err)));`;
  const workers = Array.from({ length: 6 }, () => new Worker(code, { eval: true }));
  const results = workers.map((w) => once(w, 'message').then(([m]) => m as string));
  for (let i = 0; i < 200; i++) new IdleCollector(1000).stop();
  t.deepEqual(await Promise.all(results), workers.map(() => 'ok'));
  await Promise.all(workers.map((w) => w.terminate()));
});

/** Linux with glibc: where malloc_trim exists (musl and other systems have none). */
const glibc = process.platform === 'linux' && Boolean((process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime);

// In a fresh process, whose heap has no holes from earlier work: there the
// small blocks kept between the big ones are carved in order, so freeing the
// big ones leaves holes that free() cannot give back and a trim can.
const trimChild = (busy: boolean) => `
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { IdleCollector } from ${JSON.stringify(new URL('../../src/idle-gc.ts', import.meta.url).href)};
const keepAlive = setInterval(() => {}, 1000);
const events = [];
// Another thread of the process spins until told to stop (busy): this one
// is quiet, the process is not. It is known to spin before the collector starts.
const stop = new Int32Array(new SharedArrayBuffer(4));
if (${busy}) {
  const w = new Worker("const { parentPort, workerData } = process.getBuiltinModule('node:worker_threads'); parentPort.postMessage('spinning'); while (Atomics.load(workerData, 0) === 0);", { eval: true, workerData: stop });
  await once(w, 'message');
}
const c = new IdleCollector(${PERIOD});
let checksSinceCollect = -1;
c.on('collect', () => {
  events.push('collect');
  checksSinceCollect = 0;
});
// Three quiet checks of this thread after a collection with the worker
// still spinning: a trim would have come by now, had it not waited.
c.on('check', () => {
  if (${busy} && checksSinceCollect >= 0 && ++checksSinceCollect === 3 && Atomics.load(stop, 0) === 0) {
    events.push('stop');
    Atomics.store(stop, 0, 1);
  }
});
c.on('trim', () => events.push('trim'));
const keep = [];
let drop = [];
for (let i = 0; i < 1024; i++) {
  drop.push(Buffer.allocUnsafeSlow(64 * 1024).fill(1));
  keep.push(Buffer.allocUnsafeSlow(64).fill(2));
}
drop = [];
const [trimmed] = await once(c, 'trim');
c.stop();
clearInterval(keepAlive);
console.log(JSON.stringify({ events, kept: keep.length, ...trimmed }));
`;

async function runTrimChild(t: ExecutionContext, busy: boolean) {
  const child = spawn(process.execPath, ['--input-type=module', '-e', trimChild(busy)], { stdio: ['ignore', 'pipe', 'inherit'] });
  // A child left behind by a test that failed or timed out would spin a core for ever, slowing every later test.
  t.teardown(() => child.kill('SIGKILL'));
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const [code] = (await once(child, 'close')) as [number];
  t.is(code, 0);
  return JSON.parse(out) as { events: string[]; kept: number; rssBefore: number; rssAfter: number };
}

test.serial('with glibc, the quiet period after a collection hands freed native memory back', async (t) => {
  t.is(canTrim, glibc, 'malloc_trim is found exactly where glibc is');
  if (!glibc) return;
  // 64 MiB in 64 KiB blocks (under glibc's mmap threshold, so from the
  // heap), each followed by a small block that stays.
  const r = await runTrimChild(t, false);
  // Exactly one trim, right after a collection. On a loaded machine the
  // process may not be quiet at once, and another collection can come first.
  t.deepEqual(r.events.slice(-2), ['collect', 'trim'], 'the trim comes in a quiet period after a collection');
  t.is(r.events.filter((e) => e === 'trim').length, 1, r.events.join(' '));
  t.is(r.kept, 1024);
  t.true(r.rssBefore - r.rssAfter > 32 * 2 ** 20, `RSS ${r.rssBefore} -> ${r.rssAfter}`);
});

test.serial('no trim while another thread of the process is busy (a trim locks every thread\'s heap)', async (t) => {
  if (!glibc) return t.is(canTrim, false);
  const r = await runTrimChild(t, true);
  const stopped = r.events.indexOf('stop');
  t.true(stopped > 0 && r.events.slice(0, stopped).includes('collect'), r.events.join(' '));
  t.deepEqual(r.events.slice(0, stopped).filter((e) => e === 'trim'), [], 'nothing trimmed while the worker spun');
  t.is(r.events.at(-1), 'trim', 'the trim came once the process was quiet');
});
