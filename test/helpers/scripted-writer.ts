// A writer whose behaviour a test scripts: fail at a phase with a code, hang at a phase, and
// record every call in order. It runs on the real SDK runtime, so the state machine, watchdog
// and order checks under test are the product's own.
import { QuiesceError, type FailureCode, type WriterUsage } from '../../src/model/index.ts';
import type { WriterDefinition } from '../../src/writers/sdk/index.ts';

export type ScriptedPhase =
  'prepare-backup' | 'prepare-snapshot' | 'freeze' | 'thaw' | 'post-snapshot' | 'backup-complete' | 'abort';

export interface ScriptedWriterOptions {
  name: string;
  usage?: WriterUsage;
  files?: string[];
  failAt?: { phase: ScriptedPhase; code: FailureCode };
  /** Never answer this phase (until the call's signal aborts, which it ignores if `ignoreSignal`). */
  hangAt?: ScriptedPhase;
  ignoreSignal?: boolean;
  /** Shared call log: `name:phase`. */
  log: string[];
}

export function scriptedWriter(options: ScriptedWriterOptions): WriterDefinition & { frozen(): boolean } {
  let frozen = false;
  const step = async (phase: ScriptedPhase, signal: AbortSignal): Promise<void> => {
    options.log.push(`${options.name}:${phase}`);
    if (options.hangAt === phase) {
      await new Promise<void>((resolve, reject) => {
        if (!options.ignoreSignal)
          signal.addEventListener('abort', () => reject(new Error('cancelled')), { once: true });
        if (options.ignoreSignal) setTimeout(resolve, 3_600_000).unref();
      });
    }
    if (options.failAt?.phase === phase) {
      throw new QuiesceError(
        options.failAt.code,
        `${options.name} refuses ${phase} (scripted ${options.failAt.code})`,
        { component: 'data' },
      );
    }
  };
  return {
    metadata: {
      name: options.name,
      classId: 'test.scripted',
      instanceId: options.name,
      usage: options.usage ?? 'back-end',
      components: [
        {
          name: 'data',
          logicalPath: options.name,
          kind: 'files',
          selectable: true,
          readableAfterThaw: false,
          files: (options.files ?? []).map((path) => ({ path, pattern: '*', recursive: true, isLog: false })),
        },
      ],
      backupTypes: ['full', 'copy', 'incremental', 'differential', 'log'],
      restoreMethod: 'restore-if-can-replace',
    },
    frozen: () => frozen,
    prepareBackup: async (_r, ctx) => step('prepare-backup', ctx.signal),
    prepareSnapshot: async (ctx) => step('prepare-snapshot', ctx.signal),
    freeze: async (ctx) => {
      await step('freeze', ctx.signal);
      frozen = true;
    },
    thaw: async (ctx) => {
      frozen = false;
      await step('thaw', ctx.signal);
    },
    postSnapshot: async (_r, ctx) => step('post-snapshot', ctx.signal),
    backupComplete: async (_r, ctx) => step('backup-complete', ctx.signal),
    abort: async (ctx) => step('abort', ctx.signal),
  };
}
