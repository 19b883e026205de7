import { z } from 'zod';

export const BACKUP_TYPES = ['full', 'copy', 'incremental', 'differential', 'log'] as const;
export type BackupType = (typeof BACKUP_TYPES)[number];
export const BackupTypeSchema = z.enum(BACKUP_TYPES);

/**
 * Why a writer honoured another type than the one asked for:
 * `replica` (a read-only replica cannot move its differential base: full becomes copy),
 * `policy` (honorFull: false), `chain-guard` (the base moved: differential becomes full),
 * `no-base` (no earlier stamp: incremental/differential becomes full),
 * `unsupported` (the writer does not offer that type).
 */
export const TYPE_REASONS = ['replica', 'policy', 'chain-guard', 'no-base', 'unsupported'] as const;
export type TypeReason = (typeof TYPE_REASONS)[number];
export const TypeReasonSchema = z.enum(TYPE_REASONS);

/** Does this type move the writer's differential base after backup-complete? */
export function movesDifferentialBase(type: BackupType): boolean {
  return type === 'full';
}
