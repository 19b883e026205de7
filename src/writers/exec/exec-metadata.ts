// The exec writer's metadata: what it runs, and the paths its service writes as its components.
import { statSync } from 'node:fs';
import { basename } from 'node:path';
import {
  BACKUP_TYPES,
  QuiesceError,
  WriterMetadataSchema,
  type Component,
  type WriterMetadata,
  type WriterUsage,
} from '../../model/index.ts';

export interface ExecWriterOptions {
  name: string;
  /** Run in prepare-snapshot, before any writer freezes, as argv (no shell). */
  prepare?: string[];
  /** The freeze command, as argv (no shell). */
  freeze?: string[];
  /** The thaw command, as argv (no shell). */
  thaw?: string[];
  /** A directory of hooks, each called with `freeze` or `thaw`. */
  hooksDir?: string;
  /** Absolute paths (files or directories) the service writes: the writer's components. */
  paths?: string[];
  /** The time limit of each script (default 30 000 ms). */
  timeoutMs?: number;
  /** Freeze order among writers (default `front-end`). */
  usage?: WriterUsage;
  /** Added to the scripts' environment. */
  env?: Record<string, string>;
}

/** The component names must be unique: the base name, or the whole path when two share one. */
function componentName(path: string, paths: readonly string[]): string {
  const name = basename(path) || path;
  const shared = paths.filter((other) => (basename(other) || other) === name).length > 1;
  return shared ? path.replace(/^\/+/, '') || path : name;
}

/** A directory (or a path not there yet) is taken whole, recursively; a file on its own. */
function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * One `files` component per path, named by its base name under the writer's name
 * (`cache/uploads`), so reports and `quiesce writers` show which path was held still.
 */
export function pathComponents(name: string, paths: readonly string[]): Component[] {
  return paths.map((path) => ({
    name: componentName(path, paths),
    logicalPath: name,
    kind: 'files',
    selectable: true,
    files: [{ path, pattern: '*', recursive: !isFile(path), isLog: false }],
    readableAfterThaw: false,
  }));
}

/** The writer's metadata: its paths as components, every backup type; `bad-config` without anything to run. */
export function execMetadata(options: ExecWriterOptions): WriterMetadata {
  const instanceId = options.hooksDir ?? options.freeze?.[0] ?? options.thaw?.[0];
  const emptyArgv = [options.prepare, options.freeze, options.thaw].some(
    (argv) => argv !== undefined && argv.length === 0,
  );
  if (instanceId === undefined || emptyArgv) {
    throw new QuiesceError(
      'bad-config',
      `exec writer ${options.name}: give a freeze and thaw command, a hooksDir, or both`,
      {
        writer: options.name,
      },
    );
  }
  const relative = (options.paths ?? []).find((path) => !path.startsWith('/'));
  if (relative !== undefined) {
    throw new QuiesceError('bad-config', `exec writer ${options.name}: paths must be absolute, got "${relative}"`, {
      writer: options.name,
    });
  }
  const parsed = WriterMetadataSchema.safeParse({
    name: options.name,
    classId: 'quiesce.exec',
    instanceId,
    usage: options.usage ?? 'front-end',
    components: pathComponents(options.name, options.paths ?? []),
    backupTypes: [...BACKUP_TYPES],
  });
  if (!parsed.success) {
    throw new QuiesceError(
      'bad-config',
      `exec writer ${options.name}: ${parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; ')}`,
    );
  }
  return parsed.data;
}
