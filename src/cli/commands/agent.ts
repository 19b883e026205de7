import type { Command } from 'commander';
import { join } from 'node:path';
import { agentSettings, describeOpenFiles, startAgent } from '../../agent/index.ts';
import { QuiesceError } from '../../model/index.ts';
import { closeWriters, composeWriters } from '../compose.ts';
import { findConfig } from '../find-config.ts';
import { untilInterrupted, type Interrupt } from '../interrupt.ts';
import { stdio } from '../output.ts';
import { messageOf } from '../../util/index.ts';

/**
 * `quiesce agent`: the guest side of a recursive set. `--init` makes this machine's key and
 * certificate (for a guest, or for the host that calls guests); without it, serve the config's
 * writers to the pinned hosts until SIGINT or SIGTERM.
 */
export function registerAgent(program: Command, interrupt: Interrupt): void {
  program
    .command('agent')
    .description(
      "serve this guest's writers and file systems to its host (mutual TLS); --init makes the key and certificate",
    )
    .option('-c, --config <file>', 'config file (its agent: and tls: sections)')
    .option('--listen <addr>', 'host:port to listen on (overrides agent.listen)')
    .option('--init', 'make a key and a self-signed certificate, print the fingerprint, and exit')
    .option('--tls-dir <dir>', 'with --init: where to put them (default <stateDir>/tls)')
    .option('--name <name>', 'with --init: the name in the certificate (default: the host name)')
    .option('--json', 'print JSON')
    .action(
      async (opts: {
        config?: string;
        listen?: string;
        init?: boolean;
        tlsDir?: string;
        name?: string;
        json?: boolean;
      }) => {
        const config = await findConfig(opts.config);
        if (opts.init) {
          const dir = opts.tlsDir ?? join(config.stateDir, 'tls');
          const name = opts.name ?? config.agent?.name ?? (await import('node:os')).hostname();
          const { makeIdentity } = await import('../../rpc/index.ts');
          const files = await makeIdentity(dir, 'agent', name);
          if (opts.json) stdio.json(files);
          else {
            stdio.out(`key ${files.key}\ncertificate ${files.cert}\nfingerprint SHA-256 ${files.fingerprint}`);
            stdio.out(
              'Copy the certificate to the other side: a host pins it as guests[].certificate, an agent as agent.hosts[].',
            );
          }
          return;
        }
        if (!config.agent || !config.tls) {
          throw new QuiesceError(
            'bad-config',
            `${opts.config ?? 'the config'} has no agent: section (with hosts:) and tls: { key, cert }; run quiesce agent --init first`,
          );
        }
        const writers = await composeWriters({ ...config, guests: [] });
        let agent;
        try {
          agent = await startAgent({
            ...agentSettings(config, writers),
            ...(opts.listen === undefined ? {} : { listen: opts.listen }),
            onError: (error) => stdio.err(`quiesce agent: ${messageOf(error)}`),
            // What an operator on the guest wants to see: each set's start and outcome, and every failure.
            onEvent: (event) => {
              if (event.event === 'fail' && event.error) {
                stdio.err(
                  `set ${event.setId}: ${event.phase}${event.writer ? ` of writer ${event.writer}` : ''} failed (${event.error.code}): ${event.error.message}`,
                );
              } else if (event.event === 'info' && event.result) {
                stdio.err(`set ${event.setId}: ${event.result}`);
              }
            },
          });
        } catch (error) {
          await closeWriters(writers);
          throw error;
        }
        const { limits } = agent;
        if (opts.json) {
          const { openFiles } = agent;
          stdio.json({
            name: agent.name,
            listening: agent.address,
            writers: writers.map((w) => w.name),
            openFiles,
            limits,
          });
        } else {
          stdio.out(
            `agent ${agent.name} listening on ${agent.address} (${writers.length} writer(s); ${describeOpenFiles(agent.openFiles)}; ` +
              `unauthenticated connections: ${limits.pendingPerPeer} a peer, ${limits.pendingTotal} in all, ${limits.handshakeTimeoutMs / 1000} s each)`,
          );
        }
        await untilInterrupted(interrupt);
        await agent.close();
      },
    );
}
