// The built-in exec writer: quiesces an application through a freeze/thaw script pair and/or a
// directory of hooks in the fsfreeze-hook.d convention; it owns no files.
export { createExecWriter, type ExecWriterOptions } from './exec-writer.ts';
export { isIgnoredHookName, listHooks } from './hooks-dir.ts';
