// Recursive-set benchmark: one host set over N guests, each a real `quiesce agent` process with
// a SQLite writer on its own bank (under `--workers` writing processes each, default 0: 32 busy
// loops would only measure the two cores' scheduler), over mutual TLS on loopback.
// Prints, per N: the host's freeze window (first host freeze to last thaw), the guests' own
// freeze windows, the whole set's time, and the cost of each further guest.
// Usage: npm run bench:guests [-- --guests 1,8,32 --sets 5 --workers 0]
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { createBank, startBankLoad, type BankLoad } from '../src/cli/demo/bank.ts';
import { runSnapshotSet, type SetWriter } from '../src/coordinator/index.ts';
import { createProviders } from '../src/providers/index.ts';
import { connectAgent, loadIdentity, makeIdentity, readPem } from '../src/rpc/index.ts';
import { createGuestWriter } from '../src/writers/guest/index.ts';

const { values } = parseArgs({
  options: {
    guests: { type: 'string', default: '1,8,32' },
    sets: { type: 'string', default: '5' },
    workers: { type: 'string', default: '0' },
  },
});
const WORKERS = Number(values.workers);
const counts = values.guests.split(',').map(Number);
const SETS = Number(values.sets);
const MAX = Math.max(...counts);
const cli = fileURLToPath(new URL('../bin/quiesce.js', import.meta.url));

const root = await mkdtemp(join(tmpdir(), 'quiesce-bench-guests-'));
const hostFiles = await makeIdentity(join(root, 'host'), 'host', 'bench-host');
const host = await loadIdentity(hostFiles);
const copy = createProviders().find((p) => p.name === 'copy')!;

interface Guest {
  name: string;
  address: string;
  cert: Buffer;
  disk: string;
  child: ChildProcess;
  load: BankLoad | null;
}

/** Starts guest i: identity, bank under load, agent process; resolves with its address once it listens. */
async function startGuest(i: number): Promise<Guest> {
  const name = `g${i}`;
  const dir = join(root, name);
  await mkdir(dir, { recursive: true });
  const files = await makeIdentity(join(dir, 'tls'), 'agent', name);
  const bank = join(dir, 'bank.db');
  createBank(bank);
  const load = WORKERS > 0 ? await startBankLoad(bank, WORKERS) : null;
  const disk = join(dir, `${name}.img`);
  await writeFile(disk, Buffer.alloc(64 * 1024, i));
  const config = join(dir, 'quiesce.yaml');
  await writeFile(
    config,
    stringify({
      stateDir: join(dir, 'state'),
      stagingDir: join(dir, 'staging'),
      registrationDir: join(dir, 'writers'),
      tls: { key: files.key, cert: files.cert },
      agent: { name, listen: '127.0.0.1:0', hosts: [hostFiles.cert], freezeFilesystems: false },
      writers: [{ type: 'sqlite', name: 'bank', path: bank }],
    }),
  );
  const child = spawn(process.execPath, [cli, 'agent', '--config', config, '--json'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const address = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      const listening = /"listening":\s*"([^"]+)"/.exec(out);
      if (listening) resolve(listening[1]!);
    });
    child.once('exit', (code) => reject(new Error(`agent ${name} exited with ${code}: ${out}`)));
  });
  return { name, address, cert: await readPem(files.cert, 'cert'), disk, child, load };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

const guests: Guest[] = [];
try {
  for (let i = 0; i < MAX; i += 4)
    guests.push(...(await Promise.all(Array.from({ length: Math.min(4, MAX - i) }, (_, k) => startGuest(i + k)))));
  console.log(
    `${guests.length} guest agent processes, each with a SQLite writer, its bank under ${WORKERS} writing process(es); ${SETS} sets each (${new Date().toISOString().slice(0, 10)})`,
  );
  const header = [
    'guests',
    'host freeze window ms (median)',
    'max',
    'guest freeze window ms (median of medians)',
    'whole set ms (median)',
    'per extra guest ms',
    'status',
  ];
  console.log(`| ${header.join(' | ')} |`);
  console.log(`|${header.map(() => '---').join('|')}|`);
  let firstSet: { n: number; ms: number } | null = null;
  for (const n of counts) {
    const windows: number[] = [];
    const guestWindows: number[] = [];
    const durations: number[] = [];
    const statuses = new Set<string>();
    for (let s = 0; s < SETS; s++) {
      const writers: SetWriter[] = guests.slice(0, n).map((g) => ({
        name: g.name,
        policy: 'prefer',
        endpoint: createGuestWriter({
          name: g.name,
          disks: [g.disk],
          agent: connectAgent(g.address, {
            identity: host,
            pinned: g.cert,
            callTimeoutMs: 30_000,
            keepaliveTimeMs: 2000,
          }),
          honorFull: true,
        }),
      }));
      const t0 = performance.now();
      const report = await runSnapshotSet({
        kind: 'backup',
        backupType: 'copy',
        writers,
        paths: [],
        stateDir: join(root, 'host-state'),
        stagingDir: join(root, 'host-staging'),
        resolveProvider: async () => ({ provider: copy, level: 'crash' }),
        freezeTimeoutMs: 30_000,
        callTimeoutMs: 30_000,
      });
      durations.push(performance.now() - t0);
      await Promise.all(writers.map((w) => w.endpoint.close()));
      statuses.add(`${report.status}/${report.consistency}`);
      if (report.freezeWindowMs !== null) windows.push(report.freezeWindowMs);
      const inner = report.guests.map((g) => g.freezeWindowMs).filter((v): v is number => v !== null);
      if (inner.length > 0) guestWindows.push(median(inner));
    }
    const whole = median(durations);
    firstSet ??= { n, ms: whole };
    const perGuest = n > firstSet.n ? ((whole - firstSet.ms) / (n - firstSet.n)).toFixed(1) : '-';
    console.log(
      `| ${n} | ${median(windows).toFixed(1)} | ${Math.max(...windows).toFixed(1)} | ${median(guestWindows).toFixed(1)} | ${whole.toFixed(0)} | ${perGuest} | ${[...statuses].join(', ')} |`,
    );
  }
} finally {
  for (const g of guests) g.child.kill('SIGTERM');
  await Promise.all(guests.map(async (g) => (g.load ? g.load.stop().catch(() => []) : [])));
  await Promise.all(
    guests.map((g) => new Promise((r) => (g.child.exitCode !== null ? r(null) : g.child.once('exit', r)))),
  );
  await rm(root, { recursive: true, force: true });
}
