import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import { LockHolder } from './lock-holder.ts';

const dirs: string[] = [];
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function database(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'quiesce-holder-'));
  dirs.push(dir);
  const path = join(dir, 'db.sqlite');
  const db = new Database(path);
  db.pragma('journal_mode = wal');
  db.exec('CREATE TABLE t (x INTEGER)');
  db.close();
  return path;
}

function canWrite(path: string, timeoutMs: number): boolean {
  const db = new Database(path, { timeout: timeoutMs });
  try {
    db.exec('INSERT INTO t VALUES (1)');
    return true;
  } catch {
    return false;
  } finally {
    db.close();
  }
}

const context = () => ({ setId: 's', signal: new AbortController().signal });

test('the holder keeps the write lock until release, and gives it up at its deadline when no thaw comes', async () => {
  const path = await database();
  const options = { writer: 'w', dbPath: path, component: 'c', lockTimeoutMs: 5000 };
  const holder = await LockHolder.start(options, context());
  await holder.lock(60_000, context());
  assert.equal(holder.locked, true);
  assert.equal(canWrite(path, 0), false, 'locked while frozen');
  await holder.release({ wait: false });
  assert.equal(canWrite(path, 0), true, 'writable once release resolves');
  await holder.release();

  const forgotten = await LockHolder.start(options, context());
  await forgotten.lock(300, context());
  const frozenAt = performance.now();
  assert.equal(canWrite(path, 3000), true, 'writable by the deadline with no release');
  const after = performance.now() - frozenAt;
  assert.ok(after >= 250 && after < 1500, `let go after ${after.toFixed(0)} ms`);
  await forgotten.release();
});

test('a database that cannot be opened fails the start with its message', async () => {
  const options = { writer: 'w', dbPath: '/nonexistent/db.sqlite', component: 'c', lockTimeoutMs: 1000 };
  await assert.rejects(LockHolder.start(options, context()), /could not lock \/nonexistent\/db\.sqlite/);
});
