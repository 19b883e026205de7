/**
 * The config file's field types: names, absolute paths, durations, commands, repository
 * locations, agent and listen addresses. Each checks its value and says how to write it right.
 */
import { posix } from 'node:path';
import { z } from 'zod';
import { messageOf } from '../util/index.ts';
import { DURATION_HINT, parseDuration } from './duration.ts';

/** Writer and guest names: they become socket file names and appear in reports. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export const nameSchema = z.string().superRefine((value, ctx) => {
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

export const absolutePath = z.string().transform((value, ctx) => {
  const problem = pathProblem(value);
  if (problem !== null) {
    ctx.addIssue({ code: 'custom', message: problem });
    return z.NEVER;
  }
  return normalizePath(value);
});

/** A duration (`250ms`, `10s`, `2m`, `1h`, or a number of milliseconds), as milliseconds. */
export const duration = z
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
      ctx.addIssue({ code: 'custom', message: messageOf(error) });
      return z.NEVER;
    }
  });

const COMMAND_HINT = 'write the absolute path of an executable, or a list of strings: [executable, arg, ...]';

/**
 * A command to run: a string is one executable path (never split on whitespace, so a path with
 * spaces stays one path and nothing is interpreted by a shell); a list is an argv.
 */
export const command = z
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
export const repositoryLocation = z.string().transform((value, ctx) => {
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
export const agentAddress = z.string().superRefine((value, ctx) => {
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

const LISTEN_HINT = 'write host:port, e.g. 0.0.0.0:7443 or [::]:7443';

/** `host:port` to listen on. */
export const listenAddress = z.string().superRefine((value, ctx) => {
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(value);
  const port = match ? Number(match[2]) : NaN;
  if (!match || !(port >= 0 && port <= 65535))
    ctx.addIssue({ code: 'custom', message: `"${value}" is not an address to listen on; ${LISTEN_HINT}` });
});
