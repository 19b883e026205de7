// Subnets for test guests: 10.213.<i>.0/30, claimed across processes (and test files running at
// once) with lock files under RUN_BASE.
import { readFileSync, unlinkSync } from 'node:fs';
import { link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { processAlive } from '../../../src/util/index.ts';
import { run, syncQuiet } from './process.ts';

/** The test guests' run state on this machine: a directory per guest (its disk is mounted there) and the subnet locks. */
export const RUN_BASE = '/run/quiesce-test-guests';
export const SUBNET_LOCKS = join(RUN_BASE, 'subnets');

export interface Subnet {
  index: number;
  /** 10.213.<index>.0/30 */
  prefix: string;
  lock: string;
}

/** Subnets this process holds, released on exit if a test run dies half-way. */
export const claimedSubnets = new Map<string, Subnet>();

/**
 * Each claimed subnet gets an `unreachable` route of the lowest priority, under the veth's own:
 * whenever the veth's route is gone (its host end is down, the guest is stopped) the host's
 * packets to the guest fail at once (EHOSTUNREACH) instead of following the default route out
 * of the machine, where a transparent proxy may even accept the connection.
 */
const FALLBACK_METRIC = '999999';

/** Claims a free i in 1..254: a lock file made atomically with link(2), holding our pid. */
export async function claimSubnet(owner: string): Promise<Subnet> {
  const { stdout } = await run('ip', ['-4', '-o', 'addr', 'show']);
  const used = new Set([...stdout.matchAll(/inet 10\.213\.(\d+)\./g)].map((m) => Number(m[1])));
  for (let index = 1; index <= 254; index++) {
    if (used.has(index)) continue;
    const lock = join(SUBNET_LOCKS, String(index));
    for (let attempt = 0; attempt < 3; attempt++) {
      await mkdir(SUBNET_LOCKS, { recursive: true });
      const draft = `${lock}.${process.pid}.${owner}`;
      await writeFile(draft, `${process.pid}\n`);
      try {
        await link(draft, lock);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
        const holder = Number((await readFile(lock, 'utf8').catch(() => '')).trim());
        if (holder > 0 && processAlive(holder)) break; // taken: next index
        await unlink(lock).catch(() => {}); // stale: its process died
        continue;
      } finally {
        await unlink(draft).catch(() => {});
      }
      const subnet = { index, prefix: `10.213.${index}.0/30`, lock };
      claimedSubnets.set(lock, subnet);
      try {
        // `replace`: a killed test process may have left its route behind.
        await run('ip', ['route', 'replace', 'unreachable', subnet.prefix, 'metric', FALLBACK_METRIC]);
      } catch (error) {
        await releaseSubnet(subnet);
        throw error;
      }
      return subnet;
    }
  }
  throw new Error('no free subnet in 10.213.0.0/16 for a test guest');
}

export async function releaseSubnet(subnet: Subnet): Promise<void> {
  if (!claimedSubnets.delete(subnet.lock)) return;
  await run('ip', ['route', 'del', 'unreachable', subnet.prefix, 'metric', FALLBACK_METRIC]).catch(() => {});
  const holder = Number((await readFile(subnet.lock, 'utf8').catch(() => '')).trim());
  if (holder === process.pid) await unlink(subnet.lock).catch(() => {});
}

export function releaseSubnetSync(subnet: Subnet): void {
  syncQuiet('ip', ['route', 'del', 'unreachable', subnet.prefix, 'metric', FALLBACK_METRIC]);
  try {
    if (Number(readFileSync(subnet.lock, 'utf8').trim()) === process.pid) unlinkSync(subnet.lock);
  } catch {
    // gone
  }
}
