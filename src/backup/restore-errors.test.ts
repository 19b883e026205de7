import assert from 'node:assert/strict';
import { lchown, symlink } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { QuiesceError } from '../model/index.ts';
import type { TreeNode } from '../repository/index.ts';
import { entryFailure, nodeProblem, pathProblem } from './restore-errors.ts';

const file: TreeNode = { name: 'f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtimeNs: '0', size: 0, content: [] };

describe('restore errors', () => {
  test('metadata no file system takes is named; real metadata passes', () => {
    assert.equal(nodeProblem(file), null);
    assert.equal(nodeProblem({ ...file, uid: 0xffff_fffe, gid: 1000, mtimeNs: '-1700000000123456789' }), null);
    assert.match(nodeProblem({ ...file, uid: 2 ** 32 + 5 })!, /uid 4294967301 is not a valid owner/);
    assert.match(nodeProblem({ ...file, gid: 0xffff_ffff })!, /gid/);
    assert.match(nodeProblem({ ...file, mtimeNs: `1${'0'.repeat(40)}` })!, /beyond what Linux keeps/);
    const link: TreeNode = { ...file, type: 'symlink', target: 'a\0b' } as unknown as TreeNode;
    assert.match(nodeProblem(link)!, /NUL/);
  });

  test('a path of PATH_MAX bytes is refused, one byte less is not', () => {
    assert.equal(pathProblem(`/${'x'.repeat(4094)}`), null);
    assert.match(pathProblem(`/${'x'.repeat(4095)}`)!, /4096 bytes, more than the 4095/);
  });

  test("damage and the system's refusals fail one entry; anything else stops the restore", async () => {
    assert.equal(entryFailure(new QuiesceError('damaged', 'blob x is damaged'))?.message, 'blob x is damaged');
    assert.equal(entryFailure(new QuiesceError('no-space', 'full')), null);
    const refusal = (promise: Promise<unknown>) =>
      promise.then(
        () => assert.fail('accepted'),
        (error: unknown) => error,
      );
    assert.equal(entryFailure(await refusal(symlink('a\0b', '/nonexistent/l')))?.code, 'damaged');
    assert.equal(entryFailure(await refusal(lchown('/', 2 ** 32 + 5, 0)))?.code, 'damaged');
    assert.equal(entryFailure(Object.assign(new Error('ENAMETOOLONG'), { code: 'ENAMETOOLONG' }))?.code, 'damaged');
    assert.equal(entryFailure(Object.assign(new Error('ENOSPC'), { code: 'ENOSPC' })), null);
    assert.equal(entryFailure(new DOMException('aborted', 'AbortError')), null);
  });
});
