/**
 * The config file's schema. Every object is strict (an unknown key is an error); durations
 * become milliseconds, commands become argv arrays, paths are checked to be absolute, and the
 * directories the file leaves out get their defaults for this user (root or not).
 */
import { homedir } from 'node:os';
import { posix } from 'node:path';
import { z } from 'zod';
import { PROVIDER_NAMES, QuiescePolicySchema, WRITER_USAGES } from '../model/index.ts';
import { DURATION_HINT, parseDuration } from './duration.ts';

// ---------------------------------------------------------------------------------------------
// Building blocks

/** Writer and guest names: they become socket file names and appear in reports. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

const nameSchema = z.string().superRefine((value, ctx) => {
  if (!NAME_PATTERN.test(value)) {
    ctx.addIssue({
      code: 'custom',
      message: `"${value}" is not a valid name: use 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit`,
    });
  }
});

/** Why `value` is not an acceptable absolute path, or null. */
export function pathProblem(value: string): string | null {
  if (value === '') return 'must be an absolute path, got an empty string';
  if (value.includes('\0')) return 'must not contain a NUL character';
  if (value.length > 4096) return 'is longer than 4096 characters';
  if (value.startsWith('~'))
    return `must be an absolute path: "~" is not expanded, write the full path instead of "${value}"`;
  if (!value.startsWith('/')) return `must be an absolute path (starting with "/"), got "${value}"`;
  if (value.split('/').includes('..')) return `must not contain ".." segments, got "${value}"`;
  return null;
}

/** `//srv//files/./` -> `/srv/files`. Lexical only: ".." is refused rather than resolved. */
export function normalizePath(value: string): string {
  const normal = posix.normalize(value);
  return normal.length > 1 && normal.endsWith('/') ? normal.slice(0, -1) : normal;
}

/** A value as the operator wrote it, for messages. */
function show(value: unknown): string {
  if (value === null || value === undefined) return 'nothing';
  if (Array.isArray(value)) return 'a list';
  return typeof value === 'object' ? 'a map' : JSON.stringify(value);
}

const absolutePath = z.string().transform((value, ctx) => {
  const problem = pathProblem(value);
  if (problem !== null) {
    ctx.addIssue({ code: 'custom', message: problem });
    return z.NEVER;
  }
  return normalizePath(value);
});

/** A duration (`250ms`, `10s`, `2m`, `1h`, or a number of milliseconds), as milliseconds. */
const duration = z
  .union([z.number(), z.string()], {
    errorMap: (issue, ctx) =>
      issue.code === 'invalid_union'
        ? { message: `${show(ctx.data)} is not a duration; ${DURATION_HINT}` }
        : { message: ctx.defaultError },
  })
  .transform((value, ctx) => {
    try {
      return parseDuration(value);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: error instanceof Error ? error.message : String(error) });
      return z.NEVER;
    }
  });

const COMMAND_HINT = 'write the absolute path of an executable, or a list of strings: [executable, arg, ...]';

/**
 * A command to run: a string is one executable path (never split on whitespace, so a path with
 * spaces stays one path and nothing is interpreted by a shell); a list is an argv.
 */
const command = z
  .union([z.string(), z.array(z.string())], {
    errorMap: (issue, ctx) => {
      if (issue.code !== 'invalid_union') return { message: ctx.defaultError };
      const data: unknown = ctx.data;
      const bad = Array.isArray(data) ? data.findIndex((item) => typeof item !== 'string') : -1;
      if (Array.isArray(data) && bad >= 0) {
        return { message: `item ${bad} of the list is ${show(data[bad])}, not a string; ${COMMAND_HINT}` };
      }
      return { message: `${show(data)} is not a command; ${COMMAND_HINT}` };
    },
  })
  .transform((value, ctx) => {
    const argv = typeof value === 'string' ? [value] : value;
    const executable = argv[0];
    if (executable === undefined) {
      ctx.addIssue({ code: 'custom', message: `the list is empty; ${COMMAND_HINT}` });
      return z.NEVER;
    }
    const problem = pathProblem(executable);
    if (problem !== null) {
      ctx.addIssue({
        code: 'custom',
        message: `the executable ${problem}`,
        path: typeof value === 'string' ? [] : [0],
      });
      return z.NEVER;
    }
    return [normalizePath(executable), ...argv.slice(1)];
  });

const REPOSITORY_HINT = 'write an absolute path or s3://bucket/prefix';
const S3_BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** A repository location: an absolute path, or `s3://bucket[/prefix]`. Kept as written (paths normalised). */
const repository = z.string().transform((value, ctx) => {
  if (value.startsWith('s3://')) {
    const [bucket = '', ...prefix] = value.slice('s3://'.length).split('/');
    if (!S3_BUCKET.test(bucket)) {
      ctx.addIssue({
        code: 'custom',
        message: `"${bucket}" is not a valid S3 bucket name (3 to 63 characters: a-z, 0-9, "." and "-")`,
      });
      return z.NEVER;
    }
    const rest = prefix.filter((part) => part !== '').join('/');
    return rest === '' ? `s3://${bucket}` : `s3://${bucket}/${rest}`;
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) {
    ctx.addIssue({ code: 'custom', message: `unsupported repository location "${value}": ${REPOSITORY_HINT}` });
    return z.NEVER;
  }
  const problem = pathProblem(value);
  if (problem !== null) {
    ctx.addIssue({ code: 'custom', message: `${problem}; ${REPOSITORY_HINT}` });
    return z.NEVER;
  }
  return normalizePath(value);
});

const AGENT_HINT = 'write tls://host:port for a quiesce agent, or qga:///path/to/socket for a QEMU guest agent';

/** A guest's agent: `tls://host:port` (a quiesce agent, mutual TLS) or `qga:///socket` (QEMU guest agent). */
const agent = z.string().superRefine((value, ctx) => {
  const problem = agentProblem(value);
  if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
});

function agentProblem(value: string): string | null {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return `"${value}" is not an agent address; ${AGENT_HINT}`;
  }
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    return `"${value}" must not carry a user, password, query or fragment; ${AGENT_HINT}`;
  }
  if (url.protocol === 'tls:') {
    const port = Number(url.port);
    if (url.hostname === '' || url.port === '' || !(port >= 1 && port <= 65535)) {
      return `"${value}" needs a host and a port; ${AGENT_HINT}`;
    }
    if (url.pathname !== '' && url.pathname !== '/') return `"${value}" must not have a path; ${AGENT_HINT}`;
    return null;
  }
  if (url.protocol === 'qga:') {
    if (url.host !== '') return `"${value}" must name a local socket (three slashes: qga:///path); ${AGENT_HINT}`;
    const problem = pathProblem(decodeURIComponent(url.pathname));
    return problem === null ? null : `the socket path ${problem}`;
  }
  return `unsupported agent scheme "${url.protocol}"; ${AGENT_HINT}`;
}

// ---------------------------------------------------------------------------------------------
// Sections

export const PolicySchema = z
  .object({
    /** What a quiesce failure does: `require` fails the set, `prefer` falls back to crash, `off` never quiesces. */
    quiesce: QuiescePolicySchema.default('prefer'),
    /** The longest any writer may stay frozen; the set is aborted and thawed after it. */
    freezeTimeout: duration.default(60_000),
    /** The longest the provider's commit may take while the writers are frozen. */
    commitTimeout: duration.default(10_000),
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
    freeze: command.optional(),
    thaw: command.optional(),
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

export const PostgresWriterSchema = z
  .object({
    type: z.literal('postgres'),
    ...writerCommon,
    /** A libpq connection string or URI. */
    connection: z.string().min(1),
  })
  .strict();

const WRITER_SCHEMAS = [SqliteWriterSchema, ExecWriterSchema, RemoteWriterSchema, PostgresWriterSchema] as const;
export const WRITER_TYPES = WRITER_SCHEMAS.map((schema) => schema.shape.type.value);

export const WriterSchema = z.discriminatedUnion('type', [...WRITER_SCHEMAS], {
  errorMap: (issue, ctx) => {
    if (issue.code !== 'invalid_union_discriminator') return { message: ctx.defaultError };
    const type: unknown = isRecord(ctx.data) ? ctx.data.type : undefined;
    const known = WRITER_TYPES.join(', ');
    if (type === undefined) return { message: `required key "type" is missing; a writer's type is one of: ${known}` };
    return { message: `unknown writer type ${JSON.stringify(type)}; known types: ${known}` };
  },
});

export const GuestSchema = z
  .object({
    name: nameSchema,
    /** Left out: the guest has no agent and is taken crash-consistent. */
    agent: agent.optional(),
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

const LISTEN_HINT = 'write host:port, e.g. 0.0.0.0:7443 or [::]:7443';

/** `host:port` to listen on. */
const listen = z.string().superRefine((value, ctx) => {
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(value);
  const port = match ? Number(match[2]) : NaN;
  if (!match || !(port >= 0 && port <= 65535))
    ctx.addIssue({ code: 'custom', message: `"${value}" is not an address to listen on; ${LISTEN_HINT}` });
});

/** The guest side: `quiesce agent` serves this machine's writers and file systems to its host. */
export const AgentSectionSchema = z
  .object({
    /** The guest's name as its host knows it; left out, the host name. */
    name: nameSchema.optional(),
    listen: listen.default('0.0.0.0:7443'),
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
    repository: repository.optional(),
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

// ---------------------------------------------------------------------------------------------
// Checks across fields, and defaults that depend on the environment

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The rules that span several fields: unique writer and guest names, an exec writer's commands.
 * It takes any value, well-formed or not, so that these mistakes are reported together with
 * every other one (zod skips refinements of an object that already failed).
 */
export function checkConfig(data: unknown, report: (path: (string | number)[], message: string) => void): void {
  if (!isRecord(data)) return;
  for (const section of ['writers', 'guests'] as const) {
    const items = data[section];
    if (!Array.isArray(items)) continue;
    const seen = new Map<string, number>();
    items.forEach((item: unknown, index) => {
      if (!isRecord(item) || typeof item.name !== 'string') return;
      const first = seen.get(item.name);
      if (first === undefined) seen.set(item.name, index);
      else
        report(
          [section, index, 'name'],
          `duplicate ${section === 'writers' ? 'writer' : 'guest'} name "${item.name}": ${section}[${first}] already has it`,
        );
    });
  }
  const guests = Array.isArray(data.guests) ? (data.guests as unknown[]) : [];
  guests.forEach((guest, index) => {
    if (!isRecord(guest) || typeof guest.agent !== 'string') return;
    if (guest.agent.startsWith('tls:')) {
      if (guest.certificate === undefined)
        report(
          ['guests', index, 'agent'],
          'a quiesce agent needs its certificate pinned: add certificate: /path/to/<guest>.crt (the agent prints it with quiesce agent --init)',
        );
      if (data.tls === undefined)
        report(
          ['guests', index, 'agent'],
          "calling a quiesce agent needs this host's own identity: add tls: { key, cert } (quiesce agent --init --tls-dir DIR makes them)",
        );
    }
    if (guest.mountpoints !== undefined && !guest.agent.startsWith('qga:'))
      report(
        ['guests', index, 'mountpoints'],
        'mountpoints are for a QEMU guest agent (qga:///socket); a quiesce agent freezes what its own config names',
      );
  });
  if (isRecord(data.agent) && data.tls === undefined)
    report(['agent'], 'an agent needs its identity: add tls: { key, cert } (quiesce agent --init makes them)');
  const writers = Array.isArray(data.writers) ? (data.writers as unknown[]) : [];
  writers.forEach((writer, index) => {
    if (!isRecord(writer) || writer.type !== 'exec') return;
    const freeze = writer.freeze !== undefined;
    const thaw = writer.thaw !== undefined;
    if (freeze && !thaw) {
      report(
        ['writers', index, 'freeze'],
        'freeze without thaw: add a thaw command, so that what was frozen is always resumed',
      );
    } else if (thaw && !freeze) {
      report(['writers', index, 'thaw'], 'thaw without freeze: add a freeze command, or remove thaw');
    } else if (!freeze && writer.hooksDir === undefined) {
      report(['writers', index], 'an exec writer needs freeze and thaw commands, or a hooksDir');
    }
  });
}

export interface DefaultDirs {
  stateDir: string;
  registrationDir: string;
  stagingDir: string;
}

/**
 * Where quiesce keeps its files when the config says nothing. As root: `/var/lib/quiesce`,
 * `/run/quiesce/writers`, `/var/tmp/quiesce`. Otherwise under the XDG directories:
 * `~/.local/state/quiesce`, `$XDG_RUNTIME_DIR/quiesce/writers` (or `<stateDir>/writers`),
 * `~/.cache/quiesce/staging`.
 */
export function defaultDirs(
  env: NodeJS.ProcessEnv = process.env,
  uid: number = process.getuid?.() ?? -1,
  home: string = homedir(),
): DefaultDirs {
  if (uid === 0) {
    return { stateDir: '/var/lib/quiesce', registrationDir: '/run/quiesce/writers', stagingDir: '/var/tmp/quiesce' };
  }
  const xdg = (name: string, fallback: string): string => {
    const value = env[name];
    return value !== undefined && pathProblem(value) === null ? normalizePath(value) : fallback;
  };
  const stateDir = posix.join(xdg('XDG_STATE_HOME', posix.join(home, '.local/state')), 'quiesce');
  const runtime = env.XDG_RUNTIME_DIR;
  const registrationDir =
    runtime !== undefined && pathProblem(runtime) === null
      ? posix.join(normalizePath(runtime), 'quiesce/writers')
      : posix.join(stateDir, 'writers');
  const stagingDir = posix.join(xdg('XDG_CACHE_HOME', posix.join(home, '.cache')), 'quiesce/staging');
  return { stateDir, registrationDir, stagingDir };
}

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
export type PostgresWriterConfig = Extract<WriterConfig, { type: 'postgres' }>;
export type GuestConfig = Config['guests'][number];
export type AgentSection = NonNullable<Config['agent']>;
