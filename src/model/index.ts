// The vocabulary of quiesce: phases, states, failure codes, backup types, consistency levels,
// writer metadata, wire messages and the report. Types and zod schemas only; no I/O.
export * from './phases.ts';
export * from './writer-state.ts';
export * from './failure.ts';
export * from './backup-type.ts';
export * from './consistency.ts';
export * from './metadata.ts';
export * from './messages.ts';
export * from './call-options.ts';
export * from './writer.ts';
export * from './agent.ts';
export * from './provider.ts';
export * from './report.ts';
export * from './time.ts';
export { componentId } from './component-id.ts';
export * from './raw-name.ts';
