// `quiesce repair index|packs` from the command line (issue 19, item 6): a damaged index is
// named at open with what to run, `repair index` makes restore whole again, `repair packs`
// names the files a damaged blob took with it, and the next backup stores them again.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runQuiesce, type CliResult } from './helpers/cli.ts';

const PASSWORD = 'a long and secret password';
let dir: string;

function quiesce(...args: string[]): CliResult {
  return runQuiesce(args, { QUIESCE_PASSWORD: PASSWORD });
}

async function setup(name: string): Promise<{ config: string; repo: string; data: string }> {
  const data = join(dir, `${name}-data`);
  await mkdir(join(data, 'sub'), { recursive: true });
  await writeFile(join(data, 'big.bin'), randomBytes(2 << 20));
  await writeFile(join(data, 'sub', 'small.txt'), 'small\n');
  const repo = join(dir, `${name}-repo`);
  const config = join(dir, `${name}.yaml`);
  await writeFile(
    config,
    [
      `repository: ${repo}`,
      `stateDir: ${join(dir, `${name}-state`)}`,
      `stagingDir: ${join(dir, `${name}-staging`)}`,
      `registrationDir: ${join(dir, 'none')}`,
      `paths: [${data}]`,
    ].join('\n'),
  );
  assert.equal(quiesce('init', '--config', config).code, 0);
  const backup = quiesce('backup', '--config', config);
  assert.equal(backup.code, 0, backup.stderr);
  return { config, repo, data };
}

function noStack(stderr: string): void {
  assert.doesNotMatch(stderr, /^\s+at /m);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quiesce-repair-cli-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('quiesce repair', () => {
  test('repair index: a damaged index is named at open, and after the repair restore and check are clean', async () => {
    const { config, repo, data } = await setup('index');
    const [index] = await readdir(join(repo, 'index'));
    const path = join(repo, 'index', index!);
    const bytes = await readFile(path);
    bytes[bytes.length >> 1]! ^= 1;
    await writeFile(path, bytes);

    const target = join(dir, 'index-restore-before');
    const before = quiesce('restore', 'latest', '--config', config, '--target', target);
    assert.notEqual(before.code, 0);
    assert.match(before.stderr, new RegExp(`warning: index object index/${index} .* is damaged.*quiesce repair index`));
    assert.equal(before.stderr.split('\n').filter((l) => l.includes('warning: index object')).length, 1);
    noStack(before.stderr);

    const repaired = quiesce('repair', 'index', '--config', config, '--json');
    assert.equal(repaired.code, 0, repaired.stderr);
    const report = JSON.parse(repaired.stdout) as { changed: boolean; damagedIndexes: { name: string }[] };
    assert.equal(report.changed, true);
    assert.deepEqual(
      report.damagedIndexes.map((d) => d.name),
      [index],
    );
    const check = quiesce('check', '--read-data', '--config', config);
    assert.equal(check.code, 0, check.stdout);
    assert.doesNotMatch(check.stderr, /warning/);
    const after = join(dir, 'index-restore-after');
    const restored = quiesce('restore', 'latest', '--config', config, '--target', after);
    assert.equal(restored.code, 0, restored.stderr);
    assert.deepEqual(await readFile(join(after, data, 'big.bin')), await readFile(join(data, 'big.bin')));
  });

  test('repair packs: a flipped byte drops one blob, names its file, and the next backup makes check clean', async () => {
    const { config, repo, data } = await setup('packs');
    // The biggest pack holds big.bin's chunks.
    const packs: { path: string; size: number }[] = [];
    for (const fan of await readdir(join(repo, 'data')))
      for (const name of await readdir(join(repo, 'data', fan))) {
        const path = join(repo, 'data', fan, name);
        packs.push({ path, size: (await readFile(path)).length });
      }
    const biggest = packs.sort((a, b) => b.size - a.size)[0]!;
    const bytes = await readFile(biggest.path);
    bytes[100]! ^= 1;
    await writeFile(biggest.path, bytes);

    const repaired = quiesce('repair', 'packs', '--config', config);
    assert.equal(repaired.code, 1, repaired.stdout + repaired.stderr);
    assert.match(repaired.stdout, /dropped data blob [0-9a-f]{64}/);
    assert.match(repaired.stdout, new RegExp(`used by: [^\\n]*:${data}/big\\.bin`));
    noStack(repaired.stderr);
    const json = quiesce('repair', 'packs', '--config', config, '--json');
    assert.equal(json.code, 0, 'a second run finds every pack sound');
    assert.deepEqual((JSON.parse(json.stdout) as { damagedPacks: unknown[] }).damagedPacks, []);

    const backup = quiesce('backup', '--config', config, '--type', 'incremental');
    assert.equal(backup.code, 0, backup.stderr);
    const check = quiesce('check', '--read-data', '--config', config);
    assert.equal(check.code, 0, check.stdout);
    const target = join(dir, 'packs-restore');
    assert.equal(quiesce('restore', 'latest', '--config', config, '--target', target).code, 0);
    assert.deepEqual(await readFile(join(target, data, 'big.bin')), await readFile(join(data, 'big.bin')));
  });
});
