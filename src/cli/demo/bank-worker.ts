// The demo's application, and the test suite's: one bank worker that transfers between random
// accounts in BEGIN IMMEDIATE transactions with a busy timeout, as an application that waits for
// locks (never fails on them) would. Reports its counts over IPC every 20 ms and when told to stop.
import Database from 'better-sqlite3';

const [path, id, pause] = process.argv.slice(2) as [string, string, string | undefined];
/** A rest after each 20 ms batch: an application busy part of the time, not a core's worth. */
const pauseMs = Number(pause ?? 0);
const db = new Database(path);
db.pragma('busy_timeout = 20000');
const stats = { transfers: 0, errors: 0, lastError: null as string | null };
const move = db.prepare('UPDATE accounts SET balance = balance + ? WHERE id = ?');
const transfer = db.transaction((from: number, to: number, amount: number) => {
  move.run(-amount, from);
  move.run(amount, to);
});
let stopping = false;
// The parent went away (a test failed, the demo was interrupted): stop quietly.
process.on('disconnect', () => {
  stopping = true;
});
process.on('error', () => {
  stopping = true;
});
process.on('message', (message) => {
  if (message === 'stop') stopping = true;
});
let seed = Number(id) * 7919 + 1;
const random = (n: number) => {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed % n;
};

// Worker 0 also does what a well-run WAL application under sustained load must: a periodic
// TRUNCATE checkpoint, because four tight writers starve SQLite's own passive checkpoints and the
// WAL would grow without bound (hundreds of MB a second on XFS here).
let lastCheckpoint = Date.now();
function maybeCheckpoint(): void {
  if (id !== '0' || Date.now() - lastCheckpoint < 250) return;
  lastCheckpoint = Date.now();
  try {
    db.pragma('wal_checkpoint(TRUNCATE)');
  } catch {
    // A busy checkpoint is retried next time; it is never an application error.
  }
}

function batch(): void {
  maybeCheckpoint();
  const until = Date.now() + 20;
  while (Date.now() < until && !stopping) {
    try {
      transfer.immediate(random(100), random(100), 1 + random(50));
      stats.transfers++;
    } catch (error) {
      stats.errors++;
      stats.lastError = error instanceof Error ? error.message : String(error);
    }
  }
  if (stopping) {
    if (process.connected) process.send?.({ ...stats, final: true });
    db.close();
    if (process.connected) process.disconnect?.();
    return;
  }
  if (process.connected) process.send?.(stats);
  if (pauseMs > 0) setTimeout(batch, pauseMs);
  else setImmediate(batch);
}
batch();
