import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { processAlive } from '../util/index.ts';

/** How long the processes of a dead set get between SIGTERM and SIGKILL. */
const GRACE_MS = 1000;

interface Found {
  pid: number;
  pgrp: number;
  session: number;
}

/** The processes whose environment names the set (`QUIESCE_SET_ID=<setId>`): its scripts, their children, its command. */
async function processesOfSet(setId: string): Promise<Found[]> {
  const needle = Buffer.from(`\0QUIESCE_SET_ID=${setId}\0`);
  const names = await readdir('/proc').catch(() => [] as string[]);
  const found: Found[] = [];
  for (const name of names) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const environ = Buffer.concat([Buffer.from([0]), await readFile(`/proc/${name}/environ`)]);
      if (!environ.includes(needle)) continue;
      const stat = await readFile(`/proc/${name}/stat`, 'utf8');
      // pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses.
      const [state, , pgrp, session] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (state === 'Z') continue;
      found.push({ pid: Number(name), pgrp: Number(pgrp), session: Number(session) });
    } catch {
      // Gone while we looked, or not ours to read.
    }
  }
  return found;
}

function signal(target: number, name: NodeJS.Signals): void {
  try {
    process.kill(target, name);
  } catch {
    // ESRCH: gone already.
  }
}

/**
 * Ends what a dead set left running: every process that carries its set id, and with it the whole
 * process group of one that leads its own session (an exec writer's script runs so, and its
 * background children stay in its group). A group shared with anything else (the requester's own
 * terminal job) is never signalled, only the process. SIGTERM, then SIGKILL after a grace period.
 * Answers how many processes were found.
 */
export async function endSetProcesses(setId: string): Promise<number> {
  const found = await processesOfSet(setId);
  if (found.length === 0) return 0;
  const ownGroup = await readFile('/proc/self/stat', 'utf8')
    .then((stat) => Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]))
    .catch(() => -1);
  const targets = new Set<number>();
  for (const { pid, pgrp, session } of found) {
    targets.add(pgrp === session && pgrp !== ownGroup && pgrp > 1 ? -pgrp : pid);
  }
  for (const target of targets) signal(target, 'SIGTERM');
  const deadline = Date.now() + GRACE_MS;
  while (Date.now() < deadline && found.some(({ pid }) => processAlive(pid))) await sleep(25);
  for (const target of targets) signal(target, 'SIGKILL');
  return found.length;
}
