import { QuiesceError } from '../model/index.ts';
import { advance, type Participant } from './participant.ts';
import { failWriter, type SetRun } from './set-run.ts';
import { callDeadline, callWriter } from './writer-call.ts';

/** Phase identify: every writer says who it is, and ties its watchdog to this process with a session. */
export async function identifyAll(run: SetRun): Promise<void> {
  const { options } = run;
  run.log.emit({
    phase: 'identify',
    event: 'info',
    result: `set ${run.setId}: ${options.kind}, type ${options.backupType}, ${run.participants.length} writer(s), ${options.paths.length} path(s)`,
  });
  await Promise.all(run.participants.map((p) => identifyOne(run, p)));
}

async function identifyOne(run: SetRun, p: Participant): Promise<void> {
  try {
    p.metadata = await callWriter(run.log, p, 'identify', callDeadline(run), (signal) =>
      p.writer.endpoint.identify({ signal }),
    );
    advance(p, 'identified');
    p.session = await p.writer.endpoint.openSession({ setId: run.setId });
  } catch (error) {
    failWriter(run, p, QuiesceError.from(error, 'nonretryable', { phase: 'identify', writer: p.writer.name }));
  }
}
