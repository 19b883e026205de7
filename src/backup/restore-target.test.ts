import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { insideTarget, prepareTarget } from './restore-target.ts';

describe('the restore target', () => {
  test('inside: strictly below the target, / included', () => {
    assert.equal(insideTarget('/', '/tmp'), true);
    assert.equal(insideTarget('/r', '/r/a'), true);
    assert.equal(insideTarget('/r', '/rx'), false);
    assert.equal(insideTarget('/r', '/r'), false);
    assert.equal(insideTarget('/', '/'), false);
  });

  test('made when missing; a file, or a path below one, is bad usage naming it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'quiesce-target-'));
    try {
      const made = await prepareTarget(join(dir, 'a', 'b'));
      assert.ok((await stat(made)).isDirectory());
      assert.equal(await prepareTarget('/'), '/');
      const file = join(dir, 'file');
      await writeFile(file, '');
      await assert.rejects(prepareTarget(file), {
        code: 'bad-usage',
        message: new RegExp(`${file} is not a directory`),
      });
      await assert.rejects(prepareTarget(join(file, 'sub')), {
        code: 'bad-usage',
        message: /part of its path is not a directory/,
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
