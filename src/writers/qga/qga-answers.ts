// What qemu-ga answers: `{"return":…}` or `{"error":{"class":…,"desc":…}}`, and the failure
// each error answer becomes, saying what to do.
import { z } from 'zod';
import { QuiesceError, type ErrorCode } from '../../model/index.ts';

const ErrorAnswerSchema = z.object({
  error: z.object({ class: z.string().max(256), desc: z.string().max(65_536) }),
});
const ReturnAnswerSchema = z.object({ return: z.unknown() }).refine((value) => 'return' in value, 'no "return" member');

export const CountSchema = z.number().int().nonnegative().max(1_000_000);
export const StatusSchema = z.enum(['thawed', 'frozen']);
export const PingSchema = z.object({}).passthrough();

export type FsfreezeStatus = 'thawed' | 'frozen';

export type Answer = z.infer<typeof ErrorAnswerSchema> | { return: unknown };

/** An `{"error":…}` answer of the agent, kept as the cause of the QuiesceError it becomes. */
export class QgaErrorAnswer extends Error {
  readonly errorClass: string;
  readonly command: string;
  constructor(command: string, errorClass: string, desc: string) {
    super(desc);
    this.name = 'QgaErrorAnswer';
    this.command = command;
    this.errorClass = errorClass;
  }
}

/** Whether a client's error is the agent's own `{"error":…}` answer (the command ran and failed, or was refused). */
export function isErrorAnswer(error: unknown): boolean {
  return error instanceof Error && error.cause instanceof QgaErrorAnswer;
}

/** The answer in one line, or `{ garbage }`: what is wrong with it, for the failure's message. */
export function parseAnswer(line: Buffer): Answer | { garbage: string } {
  let value: unknown;
  try {
    value = JSON.parse(line.toString('utf8'));
  } catch {
    return { garbage: `it answered ${clip(line.toString('utf8'))}, which is not JSON` };
  }
  const error = ErrorAnswerSchema.safeParse(value);
  if (error.success) return error.data;
  const answer = ReturnAnswerSchema.safeParse(value);
  if (answer.success) return { return: answer.data.return };
  return { garbage: `it answered ${clip(line.toString('utf8'))}, which is neither {"return":…} nor {"error":…}` };
}

/** The failure an error answer becomes: `retryable` when someone else holds the guest frozen, else `nonretryable`. */
export function errorAnswerFailure(
  socketPath: string,
  command: string,
  errorClass: string,
  desc: string,
): QuiesceError {
  const cause = new QgaErrorAnswer(command, errorClass, desc);
  const where = `qemu-ga on ${socketPath}`;
  let code: ErrorCode = 'nonretryable';
  let message: string;
  if (/frozen state/i.test(desc)) {
    code = 'retryable';
    message = `${where} refused ${command}: ${desc}. The guest's file systems are frozen by another client (another backup, or virsh domfsfreeze); retry when it has thawed them, or thaw them with guest-fsfreeze-thaw if nothing holds them any more`;
  } else if (errorClass === 'CommandNotFound' && /disabled/i.test(desc)) {
    message = `${where} refused ${command}: ${desc}. The command is disabled in the guest: remove it from qemu-ga's --block-rpcs (block-rpcs in /etc/qemu/qemu-ga.conf)`;
  } else if (errorClass === 'CommandNotFound') {
    message = `${where} does not know ${command}: ${desc}. Upgrade qemu-ga in the guest (guest-fsfreeze-freeze-list needs qemu-ga 2.2 or later)`;
  } else if (command.startsWith('guest-fsfreeze-freeze')) {
    message = `${where} could not freeze the guest's file systems (${errorClass}: ${desc}); it thawed whatever it had frozen. Check the guest's system log and its fsfreeze hook, if any`;
  } else {
    message = `${where} failed ${command} (${errorClass}: ${desc})`;
  }
  return new QuiesceError(code, message, { cause });
}

/**
 * A received value as JSON cut to 200 characters, for a message. JSON.stringify recurses: a value
 * nested thousands deep (which JSON.parse reads fine) overflows the stack, so it is named instead.
 */
export function quote(value: unknown): string {
  try {
    return clip(JSON.stringify(value) ?? String(value));
  } catch {
    return '(a value nested too deep to quote)';
  }
}

/** Text cut to 200 characters, for quoting an answer in a message. */
export function clip(text: string): string {
  return text.length <= 200 ? text : `${text.slice(0, 199)}…`;
}
