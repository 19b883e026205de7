// Asking the kernel about other processes.
import { readFileSync } from 'node:fs';

/** True while a process with this pid exists (EPERM: it exists, owned by someone else). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let bootId: string | null | undefined;

function thisBoot(): string | null {
  if (bootId === undefined) {
    try {
      bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      bootId = null;
    }
  }
  return bootId;
}

/**
 * When a process started, as `<boot id>:<start time>` (the kernel's clock ticks since boot,
 * `/proc/PID/stat` field 22): with its pid it names one process for all time, where a pid alone
 * is reused once the kernel's 32,768 (or `pid_max`) have gone round. Null where /proc cannot say.
 */
export function processStart(pid: number): string | null {
  const boot = thisBoot();
  if (boot === null) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The name (field 2) is in parentheses and may hold spaces and parentheses itself.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const start = fields[19];
    return start === undefined || !/^\d+$/.test(start) ? null : `${boot}:${start}`;
  } catch {
    return null;
  }
}

/**
 * True while the process that recorded itself as `pid` started at `start` still runs. A pid
 * that is alive but started at another time is a reused one: that process is gone. Without a
 * recorded start (an older record), or where /proc cannot say, the pid alone decides.
 */
export function recordedProcessAlive(pid: number, start: string | null | undefined): boolean {
  if (!processAlive(pid)) return false;
  if (start === undefined || start === null) return true;
  const now = processStart(pid);
  return now === null || now === start;
}
