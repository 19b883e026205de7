/**
 * The config file's schema: its sections and the types they parse to. Every object is strict (an
 * unknown key is an error); the field types (fields.ts) check and normalise each value, and the
 * directories the file leaves out get their defaults for this user (cross-checks.ts).
 */
import { posix } from 'node:path';
import { z } from 'zod';
import { PROVIDER_NAMES, QuiescePolicySchema, WRITER_USAGES } from '../model/index.ts';
import { isRecord } from '../util/index.ts';
import { checkConfig, defaultDirs } from './cross-checks.ts';
import {
  absolutePath,
  agentAddress,
  command,
  duration,
  listenAddress,
  nameSchema,
  repositoryLocation,
} from './fields.ts';

export const PolicySchema = z
  .object({
    /** What a quiesce failure does: `require` fails the set, `prefer` falls back to crash, `off` never quiesces. */
    quiesce: QuiescePolicySchema.default('prefer'),
    /** The longest any writer may stay frozen; the set is aborted and thawed after it. */
    freezeTimeout: duration.default(60_000),
    /** The longest the provider's commit may take while the writers are frozen. */
    commitTimeout: duration.default(10_000),
    /**
     * When plain paths (no writer owns them) are taken by a copy-based provider: `after-thaw`
     * reads them in place once the writers run again (`inconsistent`, and no writer's freeze
     * grows with them); `in-freeze` copies them inside the freeze (fsfreeze then gives them
     * `filesystem`, at the cost of a freeze as long as the copy). An atomic provider (btrfs)
     * takes them in its one commit either way.
     */
    plainPaths: z.enum(['after-thaw', 'in-freeze']).default('after-thaw'),
  })
  .strict();

/** Fields every writer has. `quiesce` left out means the global policy's; `usage` left out means the writer's own. */
const writerCommon = {
  name: nameSchema,
  usage: z.enum(WRITER_USAGES).optional(),
  quiesce: QuiescePolicySchema.optional(),
  /** `false` turns every `full` asked from outside into `copy`, so the application's own backup chain is kept. */
  honorFull: z.boolean().default(true),
};

export const SqliteWriterSchema = z
  .object({
    type: z.literal('sqlite'),
    ...writerCommon,
    /** The database file. */
    path: absolutePath,
    /** How long to wait for the write lock when freezing. */
    lockTimeout: duration.default(5_000),
  })
  .strict();

export const ExecWriterSchema = z
  .object({
    type: z.literal('exec'),
    ...writerCommon,
    /** Run in prepare-snapshot, before any writer freezes: the slow work (a CHECKPOINT) outside the freeze window. */
    prepare: command.optional(),
    freeze: command.optional(),
    thaw: command.optional(),
    /** The files and directories the service writes (directories recursively): the writer's components. */
    paths: z.array(absolutePath).optional(),
    /** A directory of hooks, each run with the argument `freeze` or `thaw` (the QEMU guest agent's fsfreeze-hook.d convention). */
    hooksDir: absolutePath.optional(),
    /** How long each command may run. */
    timeout: duration.default(30_000),
  })
  .strict();

export const RemoteWriterSchema = z
  .object({
    type: z.literal('remote'),
    ...writerCommon,
    /** The writer's Unix socket; left out, `<registrationDir>/<name>.sock`. */
    socket: absolutePath.optional(),
  })
  .strict();

const WRITER_SCHEMAS = [SqliteWriterSchema, ExecWriterSchema, RemoteWriterSchema] as const;
export const WRITER_TYPES = WRITER_SCHEMAS.map((schema) => schema.shape.type.value);

/**
 * Writer types that are planned but not built: refused here, where the message can name the file,
 * line and field, and not later when the writers are made.
 */
export const UNAVAILABLE_WRITER_TYPES = ['postgres'] as const;

function unavailable(type: unknown): type is (typeof UNAVAILABLE_WRITER_TYPES)[number] {
  return (UNAVAILABLE_WRITER_TYPES as readonly unknown[]).includes(type);
}

export const WriterSchema = z.discriminatedUnion('type', [...WRITER_SCHEMAS], {
  errorMap: (issue, ctx) => {
    if (issue.code !== 'invalid_union_discriminator') return { message: ctx.defaultError };
    const type: unknown = isRecord(ctx.data) ? ctx.data.type : undefined;
    if (type === undefined) {
      return { message: `required key "type" is missing; a writer's type is one of: ${WRITER_TYPES.join(', ')}` };
    }
    if (unavailable(type)) {
      return {
        message: `the ${type} writer is not available yet in this version of quiesce: remove it, or use an exec writer (freeze and thaw commands) meanwhile`,
      };
    }
    const planned = UNAVAILABLE_WRITER_TYPES.map((name) => `${name} (not available yet)`);
    return {
      message: `unknown writer type ${JSON.stringify(type)}; known types: ${[...WRITER_TYPES, ...planned].join(', ')}`,
    };
  },
});

export const GuestSchema = z
  .object({
    name: nameSchema,
    /** Left out: the guest has no agent and is taken crash-consistent. */
    agent: agentAddress.optional(),
    /** The guest's disk image files on this host. */
    disks: z.array(absolutePath).min(1),
    /** The guest agent's certificate (PEM), pinned: the only one this host accepts from that address. */
    certificate: absolutePath.optional(),
    /** For a QEMU guest agent: the guest's mount points to freeze (left out: all of them). */
    mountpoints: z.array(absolutePath).optional(),
    quiesce: QuiescePolicySchema.optional(),
    honorFull: z.boolean().default(true),
  })
  .strict();

/** This machine's identity on the agent wire: a key and its self-signed certificate (`quiesce agent --init` makes them). */
export const TlsSchema = z
  .object({
    key: absolutePath,
    cert: absolutePath,
  })
  .strict();

/** The guest side: `quiesce agent` serves this machine's writers and file systems to its host. */
export const AgentSectionSchema = z
  .object({
    /** The guest's name as its host knows it; left out, the host name. */
    name: nameSchema.optional(),
    listen: listenAddress.default('0.0.0.0:7443'),
    /** The certificates (PEM) of the hosts allowed to call: pinned, nothing else is answered. */
    hosts: z.array(absolutePath).min(1),
    /** Freeze the file systems holding the writers' files and `paths` while the host snapshots. */
    freezeFilesystems: z.boolean().default(true),
    /** Allow freezing the root file system (a VM's usual case). */
    freezeRoot: z.boolean().default(false),
  })
  .strict();

const ConfigObjectSchema = z
  .object({
    /** Where backups go; `--repo` and `QUIESCE_REPO` override it. */
    repository: repositoryLocation.optional(),
    /** Event logs and locks. */
    stateDir: absolutePath.optional(),
    /** Where out-of-process writers' Unix sockets are found. */
    registrationDir: absolutePath.optional(),
    /** Where the copy and fsfreeze providers put their copies. */
    stagingDir: absolutePath.optional(),
    policy: PolicySchema.default({}),
    writers: z.array(WriterSchema).default([]),
    /** Paths taken with no writer: filesystem or crash level. */
    paths: z.array(absolutePath).default([]),
    /** A provider forced for a path, instead of the best one that supports it. */
    providers: z.record(absolutePath, z.enum(PROVIDER_NAMES)).default({}),
    guests: z.array(GuestSchema).default([]),
    /** This machine's key and certificate on the agent wire (a host calling guests, or an agent). */
    tls: TlsSchema.optional(),
    /** Set on a guest that runs `quiesce agent`. */
    agent: AgentSectionSchema.optional(),
  })
  .strict();

/**
 * The whole config file. Parse with `parseConfig` (load.ts) for positioned errors; parsing a
 * plain object with this schema works too and applies the same rules and defaults.
 */
export const ConfigSchema = ConfigObjectSchema.superRefine((config, ctx) =>
  checkConfig(config, (path, message) => ctx.addIssue({ code: 'custom', path, message })),
).transform((config) => {
  const dirs = defaultDirs();
  const registrationDir = config.registrationDir ?? dirs.registrationDir;
  return {
    ...config,
    stateDir: config.stateDir ?? dirs.stateDir,
    registrationDir,
    stagingDir: config.stagingDir ?? dirs.stagingDir,
    writers: config.writers.map((writer) =>
      writer.type === 'remote'
        ? { ...writer, socket: writer.socket ?? posix.join(registrationDir, `${writer.name}.sock`) }
        : writer,
    ),
  };
});

/** A validated config: durations in ms, commands as argv, paths normalised, defaults applied. */
export type Config = z.output<typeof ConfigSchema>;
/** What may be written: the config file's shape before defaults and transforms. */
export type ConfigInput = z.input<typeof ConfigSchema>;
export type Policy = Config['policy'];
export type WriterConfig = Config['writers'][number];
export type WriterType = WriterConfig['type'];
export type SqliteWriterConfig = Extract<WriterConfig, { type: 'sqlite' }>;
export type ExecWriterConfig = Extract<WriterConfig, { type: 'exec' }>;
export type RemoteWriterConfig = Extract<WriterConfig, { type: 'remote' }>;
export type GuestConfig = Config['guests'][number];
export type AgentSection = NonNullable<Config['agent']>;
