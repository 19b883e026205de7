// `quiesce forget --keep-last N --prune --grace 0` killed with SIGKILL at 20 random moments over
// a repository of many sets that share most of their data: no kept set is lost (each restores
// to the files it was taken from), `check --read-data` is clean after every kill, and the next
// prune completes (the dead process's exclusive lock is taken over).
// Replay a failure with QUIESCE_TEST_SEED=<the seed printed>; QUIESCE_KILLS sets the count.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test, type TestContext } from 'node:test';
import {
  assertCheckClean,
  countTemporaries,
  hashFiles,
  parseSets,
  quiesce,
  seededRandom,
  testSeed,
  type ListedSet,
  type SeededRandom,
} from './helpers/kill-harness.ts';

const KILLS = Number(process.env.QUIESCE_KILLS ?? 20);
const KEEP = 6;
const FILES = 120;
const PASSWORD_ENV = { QUIESCE_PASSWORD: 'kill-prune test password' };

let work: string | undefined;
after(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** Plain files changed a little between sets, so sets share most data and each has some of its own. */
async function makeData(root: string, random: SeededRandom): Promise<() => Promise<Map<string, string>>> {
  const files = new Map<string, string>();
  const write = async (name: string, bytes: Buffer) => {
    await writeFile(join(root, name), bytes);
    files.set(name, sha256(bytes));
  };
  await mkdir(root, { recursive: true });
  for (let i = 0; i < FILES; i++) await write(`f${i}.bin`, random.bytes(500 + random.int(20_000)));
  await write('big-1.bin', random.bytes(3 << 20));
  await write('big-2.bin', random.bytes(2 << 20));
  return async () => {
    for (let k = 0; k < 4; k++) await write(`f${random.int(FILES)}.bin`, random.bytes(500 + random.int(20_000)));
    const big = random.int(2) === 0 ? 'big-1.bin' : 'big-2.bin';
    const handle = await open(join(root, big), 'r+');
    const size = (await handle.stat()).size;
    await handle.write(random.bytes(256 << 10), 0, 256 << 10, random.int(size - (256 << 10)));
    await handle.close();
    files.set(big, sha256(await readFile(join(root, big))));
    return new Map(files);
  };
}

test(`${KILLS} prunes killed with SIGKILL at random moments lose no kept set`, async (t: TestContext) => {
  const seed = testSeed();
  const random = seededRandom(seed);
  t.diagnostic(`seed ${seed} (replay: QUIESCE_TEST_SEED=${seed})`);
  work = await mkdtemp(join(tmpdir(), 'quiesce-kill-prune-'));
  const dataRoot = join(work, 'data');
  const change = await makeData(dataRoot, random);
  const config = join(work, 'quiesce.yaml');
  await writeFile(
    config,
    [
      `repository: ${join(work, 'repo')}`,
      `stateDir: ${join(work, 'state')}`,
      `stagingDir: ${join(work, 'staging')}`,
      `registrationDir: ${join(work, 'none')}`,
      `paths: [${dataRoot}]`,
    ].join('\n'),
  );
  const spent = new Map<string, number>();
  const cli = async (args: string[], killAfterMs?: number) => {
    const result = await quiesce([...args, '--config', config], { env: PASSWORD_ENV, killAfterMs });
    spent.set(args[0]!, (spent.get(args[0]!) ?? 0) + result.ms);
    return result;
  };
  assert.equal((await cli(['init'])).code, 0);
  /** The plain files of each backup run, by its tag. */
  const expected = new Map<string, Map<string, string>>();
  let runs = 0;
  const backup = async () => {
    const tag = `run-${runs++}`;
    expected.set(tag, await change());
    const run = await cli(['backup', '--tag', tag]);
    assert.equal(run.code, 0, `${tag}: backup\n${run.stdout}\n${run.stderr}`);
  };
  const list = async (context: string) => parseSets(await cli(['backups', '--json']), context);
  let restores = 0;
  const verify = async (set: ListedSet, context: string) => {
    const target = join(work!, 'restore', String(restores++));
    const restored = await cli(['restore', set.id, '--target', target]);
    assert.equal(restored.code, 0, `${context}: restore ${set.id}\n${restored.stderr}`);
    const tag = set.tags.find((tg) => expected.has(tg))!;
    assert.deepEqual(
      await hashFiles(join(target, dataRoot)),
      expected.get(tag),
      `${context}: ${set.id} holds run ${tag}`,
    );
    await rm(target, { recursive: true, force: true });
  };
  const prune = (killAfterMs?: number) =>
    cli(['forget', '--keep-last', String(KEEP), '--prune', '--grace', '0', '--json'], killAfterMs);

  for (let i = 0; i < 12; i++) await backup();
  // The usual duration: a prune that forgets two sets, as each killed one does.
  const first = await prune();
  assert.equal(first.code, 0, first.stderr);
  for (let i = 0; i < 2; i++) await backup();
  const measured = await prune();
  assert.equal(measured.code, 0, measured.stderr);
  const usualMs = measured.ms;
  t.diagnostic(
    `a forget --prune of two sets takes ${usualMs.toFixed(0)} ms; kills land in [0, ${usualMs.toFixed(0)}) ms`,
  );
  const figures = { killed: 0, finishedFirst: 0, packsRepacked: 0, packsRemoved: 0, unreferenced: 0 };
  // Until KILLS prunes were killed mid-run (a prune may end before its moment): at most twice as many tries.
  for (let i = 1; figures.killed < KILLS && i <= 2 * KILLS; i++) {
    const context = `seed ${seed}, kill ${i}`;
    for (let k = 0; k < 2; k++) await backup();
    const before = await list(context);
    // The sets forget keeps: the newest KEEP.
    const kept = [...before].sort((a, b) => Date.parse(a.time) - Date.parse(b.time)).slice(-KEEP);
    const run = await prune(random.next() * usualMs);
    if (run.signal === 'SIGKILL') figures.killed++;
    else {
      figures.finishedFirst++;
      assert.equal(
        run.code,
        0,
        `${context}: a prune that ended before its kill succeeded\n${run.stdout}\n${run.stderr}`,
      );
    }
    const after = new Set((await list(context)).map((s) => s.id));
    for (const set of kept) assert.ok(after.has(set.id), `${context}: kept set ${set.id} is still listed`);
    figures.unreferenced = Math.max(
      figures.unreferenced,
      assertCheckClean(await cli(['check', '--read-data', '--json']), context),
    );
    await verify(kept[random.int(kept.length)]!, context);
    // The next prune completes, over whatever the killed one left.
    const next = await prune();
    assert.equal(next.code, 0, `${context}: the next prune completes\n${next.stdout}\n${next.stderr}`);
    const pruned = (JSON.parse(next.stdout) as { prune: { packsRepacked: number; packsRemoved: number } }).prune;
    figures.packsRepacked += pruned.packsRepacked;
    figures.packsRemoved += pruned.packsRemoved;
  }
  assert.ok(figures.killed >= KILLS, `only ${figures.killed} of the prunes were killed mid-run (seed ${seed})`);
  // At the end every set left restores to the files it was taken from.
  const sets = await list('end');
  assert.equal(sets.length, KEEP);
  for (const set of sets) await verify(set, 'end');
  assertCheckClean(await cli(['check', '--read-data', '--json']), 'end');
  t.diagnostic(
    `${figures.killed + figures.finishedFirst} prunes: ${figures.killed} killed, ${figures.finishedFirst} ended before their kill; ${runs} sets taken, ` +
      `0 kept sets lost; ${restores} restores compared; ${figures.killed + figures.finishedFirst + 1} check --read-data clean (at most ${figures.unreferenced} unreferenced packs, ` +
      `${await countTemporaries(join(work, 'repo'))} temporary files left); the prunes after the kills removed ${figures.packsRemoved} packs and repacked ${figures.packsRepacked}`,
  );
  t.diagnostic(`time in: ${[...spent].map(([command, ms]) => `${command} ${(ms / 1000).toFixed(1)} s`).join(', ')}`);
});
