/**
 * What one field's schema cannot see: the rules that span several fields, and the directories
 * a config leaves out, whose defaults depend on the user (root or not) and the environment.
 */
import { homedir } from 'node:os';
import { posix } from 'node:path';
import { isRecord } from '../util/index.ts';
import { normalizePath, pathProblem } from './fields.ts';

/**
 * The rules that span several fields: unique writer and guest names, an exec writer's commands.
 * It takes any value, well-formed or not, so that these mistakes are reported together with
 * every other one (zod skips refinements of an object that already failed).
 */
export function checkConfig(data: unknown, report: (path: (string | number)[], message: string) => void): void {
  if (!isRecord(data)) return;
  for (const section of ['writers', 'guests'] as const) {
    const items = data[section];
    if (!Array.isArray(items)) continue;
    const seen = new Map<string, number>();
    items.forEach((item: unknown, index) => {
      if (!isRecord(item) || typeof item.name !== 'string') return;
      const first = seen.get(item.name);
      if (first === undefined) seen.set(item.name, index);
      else
        report(
          [section, index, 'name'],
          `duplicate ${section === 'writers' ? 'writer' : 'guest'} name "${item.name}": ${section}[${first}] already has it`,
        );
    });
  }
  const guests = Array.isArray(data.guests) ? (data.guests as unknown[]) : [];
  guests.forEach((guest, index) => {
    if (!isRecord(guest) || typeof guest.agent !== 'string') return;
    if (guest.agent.startsWith('tls:')) {
      if (guest.certificate === undefined)
        report(
          ['guests', index, 'agent'],
          'a quiesce agent needs its certificate pinned: add certificate: /path/to/<guest>.crt (the agent prints it with quiesce agent --init)',
        );
      if (data.tls === undefined)
        report(
          ['guests', index, 'agent'],
          "calling a quiesce agent needs this host's own identity: add tls: { key, cert } (quiesce agent --init --tls-dir DIR makes them)",
        );
    }
    if (guest.mountpoints !== undefined && !guest.agent.startsWith('qga:'))
      report(
        ['guests', index, 'mountpoints'],
        'mountpoints are for a QEMU guest agent (qga:///socket); a quiesce agent freezes what its own config names',
      );
  });
  if (isRecord(data.agent) && data.tls === undefined)
    report(['agent'], 'an agent needs its identity: add tls: { key, cert } (quiesce agent --init makes them)');
  const writers = Array.isArray(data.writers) ? (data.writers as unknown[]) : [];
  writers.forEach((writer, index) => {
    if (!isRecord(writer) || writer.type !== 'exec') return;
    const freeze = writer.freeze !== undefined;
    const thaw = writer.thaw !== undefined;
    if (freeze && !thaw) {
      report(
        ['writers', index, 'freeze'],
        'freeze without thaw: add a thaw command, so that what was frozen is always resumed',
      );
    } else if (thaw && !freeze) {
      report(['writers', index, 'thaw'], 'thaw without freeze: add a freeze command, or remove thaw');
    } else if (!freeze && writer.hooksDir === undefined) {
      report(['writers', index], 'an exec writer needs freeze and thaw commands, or a hooksDir');
    }
  });
}

export interface DefaultDirs {
  stateDir: string;
  registrationDir: string;
  stagingDir: string;
}

/**
 * Where quiesce keeps its files when the config says nothing. As root: `/var/lib/quiesce`,
 * `/run/quiesce/writers`, `/var/tmp/quiesce`. Otherwise under the XDG directories:
 * `~/.local/state/quiesce`, `$XDG_RUNTIME_DIR/quiesce/writers` (or `<stateDir>/writers`),
 * `~/.cache/quiesce/staging`.
 */
export function defaultDirs(
  env: NodeJS.ProcessEnv = process.env,
  uid: number = process.getuid?.() ?? -1,
  home: string = homedir(),
): DefaultDirs {
  if (uid === 0) {
    return { stateDir: '/var/lib/quiesce', registrationDir: '/run/quiesce/writers', stagingDir: '/var/tmp/quiesce' };
  }
  const xdg = (name: string, fallback: string): string => {
    const value = env[name];
    return value !== undefined && pathProblem(value) === null ? normalizePath(value) : fallback;
  };
  const stateDir = posix.join(xdg('XDG_STATE_HOME', posix.join(home, '.local/state')), 'quiesce');
  const runtime = env.XDG_RUNTIME_DIR;
  const registrationDir =
    runtime !== undefined && pathProblem(runtime) === null
      ? posix.join(normalizePath(runtime), 'quiesce/writers')
      : posix.join(stateDir, 'writers');
  const stagingDir = posix.join(xdg('XDG_CACHE_HOME', posix.join(home, '.cache')), 'quiesce/staging');
  return { stateDir, registrationDir, stagingDir };
}
