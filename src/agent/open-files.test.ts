import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { describeOpenFiles, parseOpenFiles } from './open-files.ts';

const REPO = join(import.meta.dirname, '..', '..');

describe('the open-files limit', () => {
  test('read from /proc/<pid>/limits', () => {
    const text = readFileSync('/proc/self/limits', 'utf8');
    const limit = parseOpenFiles(text);
    assert.ok(limit && limit.soft > 0 && limit.hard >= limit.soft, text);
    assert.deepEqual(parseOpenFiles('Max open files            unlimited            unlimited            files'), {
      soft: Infinity,
      hard: Infinity,
    });
    assert.equal(parseOpenFiles('nothing here'), undefined);
    assert.equal(describeOpenFiles({ soft: 4096, hard: 4096, raisedFrom: 1024 }), 'open files 4096 (raised from 1024)');
  });

  test('a process whose soft limit is below its hard limit raises it to the hard limit', () => {
    // Node raises its own soft limit at start, so the process lowers it first (prlimit on itself).
    const script = `
      import { execFileSync } from 'node:child_process';
      import { raiseOpenFilesLimit } from './src/agent/open-files.ts';
      execFileSync('prlimit', ['--pid', String(process.pid), '--nofile=256:2048']);
      console.log(JSON.stringify(await raiseOpenFilesLimit()));`;
    const out = execFileSync(
      'prlimit',
      ['--nofile=2048:2048', '--', process.execPath, '--import', 'tsx', '--input-type=module', '-e', script],
      { cwd: REPO, encoding: 'utf8' },
    );
    assert.deepEqual(JSON.parse(out.trim()), { soft: 2048, hard: 2048, raisedFrom: 256 });
  });
});
