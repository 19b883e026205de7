import { z } from 'zod';
import { BackupTypeSchema } from './backup-type.ts';
import { WRITER_USAGES } from './phases.ts';

const name = z.string().min(1).max(256);

/** One file set of a component: a path, an optional glob pattern of names, recursion, and whether it holds logs. */
export const ComponentFileSchema = z.object({
  path: z.string().min(1).max(4096),
  pattern: z.string().max(256).default('*'),
  recursive: z.boolean().default(false),
  isLog: z.boolean().default(false),
});
export type ComponentFile = z.infer<typeof ComponentFileSchema>;

export const ComponentSchema = z.object({
  name,
  /** Where the component sits in the writer's namespace, e.g. `shop` for `shop/shop.db`. */
  logicalPath: z.string().max(1024).default(''),
  kind: z.enum(['database', 'files']),
  selectable: z.boolean().default(true),
  files: z.array(ComponentFileSchema).max(1024),
  /**
   * The files may be copied while the application runs again (a database in backup mode, whose
   * log repairs a fuzzy copy): copy-based providers copy them after thaw, so they lengthen no
   * writer's freeze window. An atomic snapshot (btrfs) still takes them in its one commit.
   */
  readableAfterThaw: z.boolean().default(false),
});
export type Component = z.infer<typeof ComponentSchema>;

export const RESTORE_METHODS = [
  'restore-if-not-there',
  'restore-if-can-replace',
  'stop-restore-start',
  'custom',
] as const;

export const WriterMetadataSchema = z.object({
  name,
  /** The kind of writer, e.g. `quiesce.sqlite`. */
  classId: name,
  /** This instance, e.g. the database path or cluster name. */
  instanceId: z.string().min(1).max(4096),
  usage: z.enum(WRITER_USAGES),
  components: z.array(ComponentSchema).max(4096),
  backupTypes: z.array(BackupTypeSchema).min(1),
  restoreMethod: z.enum(RESTORE_METHODS).default('restore-if-can-replace'),
});
export type WriterMetadata = z.infer<typeof WriterMetadataSchema>;

/** The full name of a component: `logicalPath/name`, or just `name`. */
export function componentKey(component: Pick<Component, 'name' | 'logicalPath'>): string {
  return component.logicalPath ? `${component.logicalPath}/${component.name}` : component.name;
}
