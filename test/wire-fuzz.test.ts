// Random and mutated bytes into the decoders of the wire: the gRPC requests a writer or agent
// server decodes (tolerantService, then parseRequest), the answers and failure trailers a client
// decodes, and qemu-ga's answers as the QGA client reads them off a real Unix socket. Each input
// gives a valid value or a clear refusal (a problem string, a QuiesceError); anything else
// escaping is a crash. Replay a failure with QUIESCE_TEST_SEED=<the seed printed>.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { QuiesceError } from '../src/model/index.ts';
import { REPORT_METHOD, SessionEventSchema, SessionRequestSchema, UNARY_METHODS } from '../src/rpc/convert.ts';
import { clientFailure } from '../src/rpc/failure-status.ts';
import { parseRequest, tolerantService } from '../src/rpc/request-decode.ts';
import { FAILURE_METADATA_KEY, loadAgentService, type WireMethod } from '../src/rpc/writer-proto.ts';
import { QgaClient } from '../src/writers/qga/qga-client.ts';
import {
  attempt,
  deepJson,
  describeTally,
  mutateBytes,
  mutateJson,
  REFUSED,
  tally,
  type Tally,
} from './helpers/fuzz.ts';
import { seededRandom, testSeed, type SeededRandom } from './helpers/kill-harness.ts';

const seed = testSeed();
const SCALE = Number(process.env.QUIESCE_FUZZ_SCALE ?? 1);
const count = (n: number) => Math.max(1, Math.round(n * SCALE));
let dir: string | undefined;
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

function report(t: TestContext, result: Tally): void {
  t.diagnostic(describeTally(result));
  assert.deepEqual(result.crashes.slice(0, 5), [], `seed ${seed}: ${result.crashes.length} crashes of ${result.name}`);
  assert.ok(result.refused > 0 && result.decoded > 0, `${result.name}: some inputs pass and some are refused`);
}

const metadata = {
  name: 'shop',
  classId: 'quiesce.sqlite',
  instanceId: '/srv/shop.db',
  usage: 'back-end',
  components: [
    {
      name: 'shop.db',
      logicalPath: 'shop',
      kind: 'database',
      selectable: true,
      files: [{ path: '/srv/shop.db', pattern: '*', recursive: false, isLog: false }],
    },
  ],
  backupTypes: ['full', 'copy'],
  restoreMethod: 'restore-if-can-replace',
};
const failure = { code: 'timeout', phase: 'freeze', writer: 'shop', component: null, message: 'too slow' };
const guest = {
  name: 'vm1',
  agent: 'quiesce',
  consistency: 'application',
  status: 'succeeded',
  error: null,
  message: null,
  frozenAtMs: 12,
  freezeWindowMs: 3.5,
  components: [],
  writers: [],
  guests: [],
};

/** A valid request and answer (model shapes) for every rpc that has one. */
const EXAMPLES: Record<string, { request: object; response?: object }> = {
  identify: { request: {}, response: metadata },
  status: { request: {}, response: { metadata, state: 'stable', setId: null, lastFailure: failure } },
  prepareBackup: {
    request: {
      setId: 's1',
      backupType: 'incremental',
      components: [{ component: 'shop/shop.db', previousStamp: 'x' }],
    },
    response: { components: [{ component: 'shop/shop.db', actualType: 'full', typeReason: 'no-previous-stamp' }] },
  },
  prepareSnapshot: { request: { setId: 's1' } },
  freeze: { request: { setId: 's1', thawDeadlineMs: 5000 } },
  thaw: { request: { setId: 's1' }, response: { selfThawed: false, frozenMs: 8.25 } },
  postSnapshot: {
    request: { setId: 's1', snapshots: [{ original: '/srv', snapshot: '/var/tmp/q/srv' }] },
    response: {
      components: [
        {
          component: 'shop/shop.db',
          newStamp: 'st',
          partialFiles: [{ path: '/srv/a', size: 10, ranges: [{ offset: 0, length: 4 }] }],
        },
      ],
    },
  },
  backupComplete: {
    request: {
      setId: 's1',
      backupType: 'full',
      components: [{ component: 'c', actualType: 'full', succeeded: true, stamp: 'st' }],
    },
  },
  abort: { request: { setId: 's1' } },
  shutdown: { request: { setId: 's1' } },
  preRestore: { request: { setId: 's1', components: ['c'], target: '/restore', moreFollow: true } },
  postRestore: { request: { setId: 's1', components: ['c'], target: '/restore', moreFollow: false } },
};

type AnyMethod = {
  rpc: string;
  requestSchema: { safeParse(v: unknown): { success: boolean } };
  requestToWire(r: never): object;
  requestFromWire(w: unknown): unknown;
  responseSchema: { safeParse(v: unknown): { success: boolean } };
  responseToWire(r: never): object;
  responseFromWire(w: unknown): unknown;
};
const METHODS: [string, AnyMethod, { request: object; response?: object }][] = [
  ...Object.entries(UNARY_METHODS).map(([name, m]) => [name, m as unknown as AnyMethod, EXAMPLES[name]!] as const),
  ['report', REPORT_METHOD, { request: { setId: 's1' }, response: guest }],
] as [string, AnyMethod, { request: object; response?: object }][];

/** Bytes mutated 1–3 times, or (a fifth) random bytes of any length. */
function damagedBytes(random: SeededRandom, bytes: Buffer): { bytes: Buffer; how: string } {
  let out = { bytes, how: '' };
  for (let i = 1 + random.int(3); i > 0; i--) {
    const next = mutateBytes(out.bytes, random);
    out = { bytes: next.bytes, how: `${out.how}${out.how ? ', ' : ''}${next.how}` };
  }
  return out;
}

describe('wire decoders under random and mutated input', { timeout: 120_000 }, () => {
  const service = loadAgentService();
  const tolerant = tolerantService(service);

  test('gRPC requests as a server decodes them (tolerantService, parseRequest)', async (t) => {
    t.diagnostic(`seed ${seed} (replay: QUIESCE_TEST_SEED=${seed})`);
    const random = seededRandom(seed);
    const result = tally('gRPC requests');
    for (let i = 0; i < count(6000); i++) {
      const [name, method, example] = METHODS[random.int(METHODS.length)]!;
      const definition: WireMethod = service[method.rpc as keyof typeof service];
      const wire = method.requestToWire(example.request as never);
      // Mostly damaged protobuf; a third decoded objects of another shape (what a proto decoder of another version gives).
      const asObject = random.int(3) === 0;
      const { bytes, how } = asObject
        ? { bytes: Buffer.alloc(0), how: '' }
        : damagedBytes(random, definition.requestSerialize(wire));
      const mutatedObject = asObject ? mutateJson(wire, random) : undefined;
      await attempt(
        result,
        `${name} request ${i} (${mutatedObject?.how ?? how})`,
        () => {
          const raw = asObject
            ? (JSON.parse(mutatedObject!.text) as unknown)
            : tolerant[method.rpc as keyof typeof tolerant].requestDeserialize(bytes);
          return parseRequest(raw, (w) => method.requestFromWire(w), method.requestSchema as never);
        },
        (parsed: { ok: boolean; problem?: string; value?: unknown }) => {
          if (!parsed.ok) return parsed.problem ? REFUSED : 'a refusal without a problem';
          return method.requestSchema.safeParse(parsed.value).success ? null : 'the schema refuses the value';
        },
      );
    }
    // OpenSession's request, decoded the same way by the session server.
    const open = service.OpenSession;
    for (let i = 0; i < count(500); i++) {
      const { bytes, how } = damagedBytes(random, open.requestSerialize({ setId: 's1' }));
      await attempt(
        result,
        `OpenSession request ${i} (${how})`,
        () => parseRequest(tolerant.OpenSession.requestDeserialize(bytes), (w) => w, SessionRequestSchema),
        (parsed) => (parsed.ok ? null : parsed.problem ? REFUSED : 'a refusal without a problem'),
      );
    }
    report(t, result);
  });

  test('gRPC answers and failure trailers as a client decodes them', async (t) => {
    const random = seededRandom(seed + 1);
    const result = tally('gRPC answers');
    const answered = METHODS.filter(([, , example]) => example.response !== undefined);
    for (let i = 0; i < count(5000); i++) {
      const [name, method, example] = answered[random.int(answered.length)]!;
      const definition: WireMethod = service[method.rpc as keyof typeof service];
      const wire = method.responseToWire(example.response as never);
      const { bytes, how } = damagedBytes(random, definition.responseSerialize(wire));
      await attempt(
        result,
        `${name} answer ${i} (${how})`,
        () => {
          let raw: unknown;
          try {
            raw = definition.responseDeserialize(bytes);
          } catch {
            return REFUSED; // grpc-js answers the call with INTERNAL, which clientFailure makes a QuiesceError
          }
          return method.responseSchema.safeParse(method.responseFromWire(raw)).success ? 'valid' : REFUSED;
        },
        (outcome) => (outcome === 'valid' ? null : REFUSED),
      );
    }
    // The Report answer is JSON in a string: nested guests, as deep as the message limit allows.
    for (let i = 0; i < count(300); i++) {
      const depth = [10, 100, 1000, 10_000, 100_000][random.int(5)]!;
      const json = `${'{"guests":['.repeat(depth)}${JSON.stringify(guest)}${']}'.repeat(depth)}`;
      const mutated = random.int(2) === 0 ? json : mutateJson(guest, random).text;
      await attempt(
        result,
        `report answer ${i} (${depth} levels of guests)`,
        () => REPORT_METHOD.responseSchema.safeParse(REPORT_METHOD.responseFromWire({ reportJson: mutated })),
        (parsed) => (parsed.success ? null : REFUSED),
      );
    }
    // OpenSession's stream of events.
    for (let i = 0; i < count(500); i++) {
      const event = { kind: 'heartbeat', setId: 's1', heartbeatIntervalMs: 1000, sentAtMs: Date.now() };
      const { bytes, how } = damagedBytes(random, service.OpenSession.responseSerialize(event));
      await attempt(
        result,
        `session event ${i} (${how})`,
        () => {
          try {
            return SessionEventSchema.safeParse(service.OpenSession.responseDeserialize(bytes)).success
              ? 'valid'
              : REFUSED;
          } catch {
            return REFUSED;
          }
        },
        (outcome) => (outcome === 'valid' ? null : REFUSED),
      );
    }
    // A failure in the trailers: the writer's own failure, or a protocol error saying it is unreadable.
    for (let i = 0; i < count(2000); i++) {
      const { text, how } =
        random.int(2) === 0
          ? mutateJson(failure, random)
          : { text: damagedBytes(random, Buffer.from(JSON.stringify(failure))).bytes.toString('latin1'), how: 'bytes' };
      const trailers = new grpc.Metadata();
      trailers.set(FAILURE_METADATA_KEY, Buffer.from(text, 'latin1'));
      const error = Object.assign(new Error('failed'), {
        code: grpc.status.DEADLINE_EXCEEDED,
        details: 'too slow',
        metadata: trailers,
      });
      await attempt(
        result,
        `failure trailer ${i} (${how})`,
        () => clientFailure(error, { target: 'unix:///x.sock', rpc: 'Freeze', phase: 'freeze', callTimeoutMs: 1000 }),
        (failureError) =>
          !(failureError instanceof QuiesceError) || failureError.message === ''
            ? 'not a QuiesceError with a message'
            : failureError.code === 'protocol'
              ? REFUSED
              : null,
      );
    }
    report(t, result);
  });

  test('qemu-ga answers read off a real Unix socket (QgaClient)', async (t) => {
    const random = seededRandom(seed + 2);
    dir = await mkdtemp(join(tmpdir(), 'quiesce-wire-fuzz-'));
    const path = join(dir, 'qga.sock');
    /** What the fake agent answers on its next connection: to the sync, then to the command. */
    let next: { sync: Buffer; syncDamaged: boolean; answer: Buffer } = {
      sync: Buffer.alloc(0),
      syncDamaged: false,
      answer: Buffer.alloc(0),
    };
    const server = createServer((socket: Socket) => {
      const plan = next;
      let pending = '';
      let answered = 0;
      socket.on('error', () => undefined);
      socket.on('data', (chunk: Buffer) => {
        pending += chunk.toString('latin1').replaceAll('\xff', '');
        for (let end = pending.indexOf('\n'); end >= 0; end = pending.indexOf('\n')) {
          const line = pending.slice(0, end);
          pending = pending.slice(end + 1);
          if (answered++ === 0) {
            const id = /"id":(\d+)/.exec(line)?.[1] ?? '0';
            const sync = Buffer.from(plan.sync.toString('latin1').replace('ID', id), 'latin1');
            // A damaged sync answer ends the connection: the client must not wait for its deadline.
            if (plan.syncDamaged) socket.end(sync);
            else socket.write(sync);
          } else socket.end(plan.answer);
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    const answers = [
      '{"return": 2}',
      '{"return": "frozen"}',
      '{"return": "thawed"}',
      '{"return": {}}',
      '{"error": {"class": "GenericError", "desc": "failed to freeze /: frozen state"}}',
      '{"error": {"class": "CommandNotFound", "desc": "Command guest-fsfreeze-freeze-list has been disabled"}}',
    ];
    const result = tally('qemu-ga answers');
    try {
      for (let i = 0; i < count(1500); i++) {
        const good = Buffer.from(answers[random.int(answers.length)]! + '\n');
        const choice = random.int(10);
        const answer =
          choice < 6
            ? damagedBytes(random, good)
            : choice < 9
              ? { bytes: Buffer.from(`${mutateJson(JSON.parse(good.toString()), random).text}\n`), how: 'structure' }
              : {
                  bytes: Buffer.from(`{"return": ${deepJson(1000 + random.int(100_000), random)}}\n`),
                  how: 'deep return',
                };
        const sync =
          random.int(8) === 0
            ? damagedBytes(random, Buffer.from('\xff{"return": ID}\n', 'latin1'))
            : { bytes: Buffer.from('\xff{"return": ID}\n', 'latin1'), how: '' };
        next = { sync: sync.bytes, syncDamaged: sync.how !== '', answer: answer.bytes };
        const command = random.int(4);
        await attempt(
          result,
          `qga ${i} (${sync.how ? `sync: ${sync.how}; ` : ''}${answer.how})`,
          async () => {
            const client = await QgaClient.connect(path, { timeoutMs: 2000 });
            try {
              if (command === 0) return await client.status();
              if (command === 1) return await client.freeze(random.int(2) === 0 ? undefined : ['/']);
              if (command === 2) return await client.thaw();
              await client.ping();
              return 'pong';
            } finally {
              await client.close();
            }
          },
          (value) =>
            value === 'pong' ||
            value === 'frozen' ||
            value === 'thawed' ||
            (typeof value === 'number' && Number.isInteger(value) && value >= 0)
              ? null
              : `an impossible answer ${String(value)}`,
        );
      }
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    report(t, result);
  });
});
