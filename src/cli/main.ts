// The `quiesce` command line: thin commands over the layers below. Exit status: 0 success,
// 1 failure, 2 bad usage or config, 3 partial (part of the set fell back or failed under prefer).
import { Command, CommanderError } from 'commander';
import { registerAgent } from './commands/agent.ts';
import { registerBackup } from './commands/backup.ts';
import { registerBackups } from './commands/backups.ts';
import { registerCheck } from './commands/check.ts';
import { registerDemo } from './commands/demo.ts';
import { registerForget } from './commands/forget.ts';
import { registerInit } from './commands/init.ts';
import { registerKey } from './commands/key.ts';
import { registerRepair } from './commands/repair.ts';
import { registerRestore } from './commands/restore.ts';
import { registerProviders } from './commands/providers.ts';
import { registerSnapshot } from './commands/snapshot.ts';
import { registerWriters } from './commands/writers.ts';
import { reportError } from './error-report.ts';
import { EXIT, exitForError } from './exit-codes.ts';
import { rootInterrupt, type Interrupt } from './interrupt.ts';
import { stdio } from './output.ts';

/** Every command; those that can be interrupted take `interrupt`'s signal. */
export function buildProgram(interrupt: Interrupt): Command {
  const program = new Command('quiesce')
    .description('application-consistent snapshots and backups for Linux')
    .version('0.1.0')
    .exitOverride()
    .showHelpAfterError('(run quiesce --help for usage)');
  registerWriters(program);
  registerProviders(program);
  registerSnapshot(program, interrupt);
  registerInit(program, interrupt);
  registerKey(program, interrupt);
  registerBackup(program, interrupt);
  registerBackups(program, interrupt);
  registerRestore(program, interrupt);
  registerCheck(program, interrupt);
  registerRepair(program, interrupt);
  registerForget(program, interrupt);
  registerDemo(program);
  registerAgent(program, interrupt);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const interrupt = rootInterrupt();
  const program = buildProgram(interrupt);
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      return error.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    // A stack only for a bug: every failure of a known class is its message (cli/error-report.ts).
    stdio.err(`quiesce: ${reportError(error).text}`);
    return exitForError(error);
  } finally {
    interrupt.dispose();
  }
}

const code = await main(process.argv);
process.exit(code);
