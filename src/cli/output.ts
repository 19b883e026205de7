import { displayRawName } from '../model/index.ts';
import type { ComponentReport, GuestReport, SetReport, WriterReport, WriterStatus } from '../model/index.ts';

/** Where the CLI writes: the core never prints, the CLI does, through this. */
export interface Output {
  out(text: string): void;
  err(text: string): void;
  json(value: unknown): void;
}

// Text shows a byte of a name that is not UTF-8 as `\xHH` (see `displayRawName`); JSON keeps it
// as the lone surrogate it is (`\udcHH` in the JSON text).
export const stdio: Output = {
  out: (text) => process.stdout.write(`${displayRawName(text)}\n`),
  err: (text) => process.stderr.write(`${displayRawName(text)}\n`),
  json: (value) => process.stdout.write(`${JSON.stringify(value, null, 2)}\n`),
};

/**
 * How a set's component is shown (and can be given to `restore --component`): the writer's
 * name, then the component's full name (`logical_path/name`), except that a full name that
 * already begins with the writer's name (a logical path that is the writer's name, as the
 * SQLite writer's is) is not prefixed again: `shop/shop.db`, not `shop/shop/shop.db`.
 */
export function componentLabel(writer: string, component: string): string {
  return component === writer || component.startsWith(`${writer}/`) ? component : `${writer}/${component}`;
}

/** A plain aligned table; the last column may be long. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

export function formatMs(value: number | null): string {
  if (value === null) return '-';
  return value < 10
    ? `${value.toFixed(2)} ms`
    : value < 10_000
      ? `${value.toFixed(1)} ms`
      : `${(value / 1000).toFixed(1)} s`;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value < 10 && unit > 0 ? value.toFixed(2) : value < 100 && unit > 0 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

export function formatWriters(statuses: (WriterStatus | { name: string; error: string })[]): string {
  const rows: string[][] = [];
  const details: string[] = [];
  for (const s of statuses) {
    if ('error' in s) {
      rows.push([s.name, '?', '?', 'unreachable', s.error]);
      continue;
    }
    const m = s.metadata;
    const failure = s.lastFailure
      ? `${s.lastFailure.code} at ${s.lastFailure.phase ?? '?'}: ${s.lastFailure.message}`
      : '-';
    rows.push([m.name, m.classId, m.instanceId, s.state, failure]);
    for (const c of m.components) {
      const files = c.files.map((f) => f.path).join(', ') || '(no files)';
      details.push(
        `  ${m.name}: component ${c.logicalPath ? `${c.logicalPath}/` : ''}${c.name} (${c.kind}${c.selectable ? '' : ', not selectable'}): ${files}`,
      );
    }
    details.push(`  ${m.name}: usage ${m.usage}, backup types ${m.backupTypes.join(' ')}, restore ${m.restoreMethod}`);
  }
  const text = table(['WRITER', 'CLASS', 'INSTANCE', 'STATE', 'LAST FAILURE'], rows);
  return details.length > 0 ? `${text}\n\n${details.join('\n')}` : text;
}

export function formatReport(report: SetReport): string {
  const lines: string[] = [];
  lines.push(`set ${report.id}: ${report.status}, consistency ${report.consistency}${report.kept ? ' (kept)' : ''}`);
  lines.push(
    `  type ${report.requestedType}, set took ${formatMs(report.stats.durationMs)}: freeze window ${formatMs(report.freezeWindowMs)}, commit ${formatMs(report.commitMs)}${report.stats.archiveMs === undefined ? '' : `, archive ${formatMs(report.stats.archiveMs)}`}`,
  );
  if (report.error)
    lines.push(
      `  error: ${report.error.code}${report.error.phase ? ` at ${report.error.phase}` : ''}${report.error.writer ? ` (writer ${report.error.writer})` : ''}: ${report.error.message}`,
    );
  for (const w of report.writers) lines.push(`  ${writerLine(w)}`);
  for (const c of report.components) lines.push(`  ${componentLine(c)}`);
  for (const s of report.snapshots)
    lines.push(
      s.provider === 'live'
        ? `  read in place ${s.original} after thaw (${s.consistency}: no snapshot holds it still)`
        : `  snapshot ${s.original} -> ${s.snapshot} (${s.provider}, ${s.consistency})`,
    );
  const changed = report.stats.changedWhileRead ?? 0;
  if (changed > 0)
    lines.push(`  ${changed} file(s) read in place changed while read: stored as read, or left out if gone`);
  for (const b of report.benign)
    lines.push(`  benign: ${b.code} at ${b.phase ?? '?'} (writer ${b.writer ?? '?'}): ${b.message}`);
  for (const g of report.guests) lines.push(...formatGuest(g, '  '));
  return lines.join('\n');
}

/** One guest of a recursive set as a tree: the guest, its writers and components, its own guests. */
export function formatGuest(guest: GuestReport, indent: string): string[] {
  const agent = guest.agent === 'quiesce' ? 'quiesce agent' : guest.agent === 'qga' ? 'QEMU guest agent' : 'no agent';
  const frozen =
    guest.frozenAtMs === null
      ? 'never frozen'
      : `frozen at +${formatMs(guest.frozenAtMs)} for ${formatMs(guest.freezeWindowMs)}`;
  const lines = [`${indent}guest ${guest.name} (${agent}): ${guest.status}, ${guest.consistency}, ${frozen}`];
  const inner = `${indent}  `;
  if (guest.error)
    lines.push(
      `${inner}error: ${guest.error.code} at ${guest.error.phase ?? '?'}${guest.error.writer ? ` (writer ${guest.error.writer})` : ''}: ${guest.error.message}`,
    );
  if (guest.message) lines.push(`${inner}note: ${guest.message}`);
  for (const w of guest.writers) lines.push(`${inner}${writerLine(w)}`);
  for (const c of guest.components) lines.push(`${inner}${componentLine(c)}`);
  for (const g of guest.guests) lines.push(...formatGuest(g, inner));
  return lines;
}

function writerLine(w: WriterReport): string {
  const failure = w.error ? `: ${w.error.code} at ${w.error.phase ?? '?'}: ${w.error.message}` : '';
  return `writer ${w.name} (${w.classId}): ${w.state}, ${w.consistency}, frozen ${formatMs(w.freezeWindowMs)}${failure}`;
}

function componentLine(c: ComponentReport): string {
  const type =
    c.actualType === c.requestedType
      ? c.actualType
      : `${c.requestedType} -> ${c.actualType}${c.typeReason ? ` (${c.typeReason})` : ''}`;
  return `component ${c.component} (writer ${c.writer}): ${c.status}, ${c.consistency}, ${type}`;
}
