// The guest side of recursive sets: `quiesce agent` serves this machine's writers and file
// systems to its host over mutual TLS, and steps the guest's own set with the host's phases.
export { agentSettings, startAgent, type AgentSettings, type RunningAgent } from './serve.ts';
export { createAgentEndpoint, type AgentEndpointOptions } from './agent-endpoint.ts';
export { describeOpenFiles, type OpenFilesLimit } from './open-files.ts';
