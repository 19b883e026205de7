// The config file: a YAML document validated by zod into a `Config`, with every mistake
// reported by file, line, column and field (`ConfigError`, code `bad-config`).
export { loadConfig, parseConfig, defaultConfig } from './load.ts';
export { ConfigError, formatIssue, type ConfigIssue } from './config-error.ts';
export {
  ConfigSchema,
  PolicySchema,
  WriterSchema,
  GuestSchema,
  WRITER_TYPES,
  type Config,
  type ConfigInput,
  type Policy,
  type WriterConfig,
  type WriterType,
  type SqliteWriterConfig,
  type ExecWriterConfig,
  type RemoteWriterConfig,
  type GuestConfig,
  type AgentSection,
} from './schema.ts';
export { NAME_PATTERN } from './fields.ts';
export { defaultDirs, type DefaultDirs } from './cross-checks.ts';
export { parseDuration, formatDuration, MAX_DURATION_MS } from './duration.ts';
