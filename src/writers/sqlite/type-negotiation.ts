/**
 * Which backup type the SQLite writer honours for a requested one, and why (docs/design.md, "type
 * negotiation" and "chain guard"). Pure: the writer's history and the requester's stamp in,
 * the plan out.
 */
import type { BackupType, TypeReason } from '../../model/index.ts';
import { messageOf } from '../../util/index.ts';
import type { BackupHistory } from './backup-history.ts';
import { decodeStamp, type PageStamp } from './page-stamp.ts';

export interface Negotiated {
  actualType: BackupType;
  typeReason?: TypeReason;
  typeMessage?: string;
  /** The stamp the changed ranges are computed against (incremental and differential only). */
  previous?: PageStamp;
}

export interface NegotiationInput {
  requested: Exclude<BackupType, 'log'>;
  previousStamp: string | undefined;
  history: BackupHistory;
  honorFull: boolean;
  /** For messages: the database path. */
  path: string;
}

const MAX_MESSAGE = 1024;

function describe(stampId: string | null, setId: string | null, at: string | null): string {
  return `stamp ${stampId ?? '(none)'}${setId ? ` of set ${setId}` : ''}${at ? ` at ${at}` : ''}`;
}

export function negotiateType(input: NegotiationInput): Negotiated {
  const { requested, previousStamp, history, honorFull, path } = input;
  let result: Negotiated = { actualType: requested };

  if (requested === 'incremental' || requested === 'differential') {
    let previous: PageStamp | undefined;
    if (previousStamp === undefined) {
      result = {
        actualType: 'full',
        typeReason: 'no-base',
        typeMessage: `no previous stamp was passed for ${path}, so this ${requested} is taken as full; it starts the chain`,
      };
    } else {
      try {
        previous = decodeStamp(previousStamp);
      } catch (error) {
        result = {
          actualType: 'full',
          typeReason: 'no-base',
          typeMessage: `the previous stamp passed for ${path} cannot be used (${messageOf(error)}), so this ${requested} is taken as full`,
        };
      }
    }
    if (previous && requested === 'differential' && previous.id !== history.baseStampId) {
      result = {
        actualType: 'full',
        typeReason: 'chain-guard',
        typeMessage:
          history.baseStampId === null
            ? `differential promoted to full: this writer has no record of a completed full backup of ${path}, ` +
              `so the base the requester passed (stamp ${previous.id}) cannot be vouched for`
            : `differential promoted to full: the differential base of ${path} moved. The requester's base is stamp ${previous.id}, ` +
              `but the last full backup that completed was ${describe(history.baseStampId, history.baseSetId, history.baseAt)}: ` +
              `another requester (or another repository) took a full backup since. A differential against the wrong base would not restore`,
      };
    } else if (previous && requested === 'incremental' && previous.id !== history.lastStampId) {
      result = {
        actualType: 'full',
        typeReason: 'chain-guard',
        typeMessage:
          history.lastStampId === null
            ? `incremental promoted to full: this writer has no record of a completed backup of ${path}, ` +
              `so the previous stamp the requester passed (${previous.id}) cannot be vouched for`
            : `incremental promoted to full: the chain of ${path} moved. The requester's previous backup is stamp ${previous.id}, ` +
              `but the last backup that completed was ${describe(history.lastStampId, history.lastSetId, history.lastAt)}: ` +
              `another requester (or another repository) took a backup since`,
      };
    } else if (previous) {
      result = { actualType: requested, previous };
    }
  }

  if (result.actualType === 'full' && !honorFull) {
    result =
      result.typeReason === undefined
        ? {
            actualType: 'copy',
            typeReason: 'policy',
            typeMessage: `honorFull is false for ${path}: a full backup from outside is taken as copy, so this writer's own chain does not move`,
          }
        : {
            ...result,
            actualType: 'copy',
            typeMessage: `${result.typeMessage ?? ''}; honorFull is false, so it is taken as copy`,
          };
  }
  if (result.typeMessage !== undefined && result.typeMessage.length > MAX_MESSAGE) {
    result.typeMessage = `${result.typeMessage.slice(0, MAX_MESSAGE - 1)}…`;
  }
  return result;
}
