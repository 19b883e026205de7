// The writer SDK: define a writer as metadata plus handlers, and run it with a runtime that
// keeps its state, checks the order of phases and guarantees thaw (in-process or behind the wire).
export type { HandlerContext, ThawOutcome, WriterDefinition } from './definition.ts';
export { createNoopEndpoint } from './noop-endpoint.ts';
export { createWriterRuntime, type WriterRuntimeEvents, type WriterRuntimeOptions } from './runtime.ts';
