// Random and mutated bytes into every decoder of what quiesce reads from disk or a repository:
// the config file, trees, indexes, manifests, pack headers, key files and the repository config.
// Each input decodes to a value its schema accepts, or is refused with a QuiesceError (or the
// module's ConfigError) that has a message; anything else escaping is a crash, and so is a hang
// (each test has a time limit). Replay a failure with QUIESCE_TEST_SEED=<the seed printed>.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test, type TestContext } from 'node:test';
import { ConfigError, parseConfig } from '../src/config/index.ts';
import { ManifestEnvelopeSchema, MemoryBackend, TreeSchema, type Tree } from '../src/repository/index.ts';
import { createKeyFile, openKeyFile, sha256Hex } from '../src/repository/crypto/keys.ts';
import { seal } from '../src/repository/crypto/seal.ts';
import { decodeIndex, IndexFileSchema, type IndexedPack } from '../src/repository/index-file.ts';
import { Manifests } from '../src/repository/manifests.ts';
import { buildPack, PackHeaderSchema, readPackHeaderFromBytes } from '../src/repository/pack-file.ts';
import { decodeConfig, encodeConfig, RepositoryConfigSchema } from '../src/repository/repository-config.ts';
import { parseTree, serializeTree } from '../src/repository/tree-blob.ts';
import { attempt, describeTally, mutateBytes, mutateJson, REFUSED, tally, type Tally } from './helpers/fuzz.ts';
import { seededRandom, testSeed, type SeededRandom } from './helpers/kill-harness.ts';

const seed = testSeed();
const SCALE = Number(process.env.QUIESCE_FUZZ_SCALE ?? 1);
const count = (n: number) => Math.max(1, Math.round(n * SCALE));
const hex = (random: SeededRandom) => random.bytes(32).toString('hex');

function report(t: TestContext, result: Tally): void {
  t.diagnostic(describeTally(result));
  assert.deepEqual(result.crashes.slice(0, 5), [], `seed ${seed}: ${result.crashes.length} crashes of ${result.name}`);
  assert.ok(result.refused > 0, `${result.name}: the mutations must break some inputs`);
}

/** Mutated text: half byte-level, half structural when the seed is JSON (`document`). */
function mutated(random: SeededRandom, bytes: Buffer, document?: unknown): { bytes: Buffer; how: string } {
  if (document !== undefined && random.int(2) === 0) {
    const { text, how } = mutateJson(document, random);
    return { bytes: Buffer.from(text, 'utf8'), how };
  }
  let out = { bytes, how: '' };
  for (let i = 1 + random.int(3); i > 0; i--) {
    const next = mutateBytes(out.bytes, random);
    out = { bytes: next.bytes, how: out.how === '' ? next.how : `${out.how}, ${next.how}` };
  }
  return out;
}

const CONFIGS = [
  [
    'repository: /var/backups/quiesce',
    'stateDir: /var/lib/quiesce',
    'policy: { quiesce: prefer, freezeTimeout: 60s, commitTimeout: 10s }',
    'writers:',
    '  - { type: sqlite, name: shop, path: /srv/shop/shop.db, lockTimeout: 2s }',
    '  - { type: exec, name: cache, freeze: /usr/local/bin/cache-pause, thaw: [/usr/local/bin/cache-resume, --now], usage: front-end }',
    '  - type: remote',
    '    name: pg',
    '    socket: /run/quiesce/pg.sock',
    'paths: [/srv/files, /etc]',
    'providers: { /srv/files: copy }',
    'guests:',
    '  - name: vm1',
    '    agent: tls://10.0.0.5:7443',
    '    disks: [/var/lib/libvirt/images/vm1.qcow2]',
    '    certificate: /etc/quiesce/vm1.pem',
    'tls: { key: /etc/quiesce/host.key, cert: /etc/quiesce/host.pem }',
  ].join('\n'),
  'agent:\n  name: guest1\n  listen: 0.0.0.0:7443\n  hosts: [/etc/quiesce/host.pem]\n  freezeRoot: true\ntls: { key: /k, cert: /c }\npaths: [/]\n',
  '{"writers": [{"type": "sqlite", "name": "a", "path": "/a.db"}], "paths": ["/b"], "policy": {"quiesce": "require"}}',
];
/** Tokens that mean something to YAML, inserted at random. */
const YAML_TOKENS = [
  '&a ',
  '*a',
  '!!binary ',
  '!!str ',
  '!!int ',
  '? ',
  '<<: ',
  '---\n',
  '...\n',
  '%YAML 1.2\n',
  '\t',
  '|\n',
  '>-\n',
  '- ',
  ': ',
  '#',
  '"',
  "'",
  '{',
  '[',
  '\ufeff',
  '!<tag:x> ',
  '*',
];

function mutatedConfig(random: SeededRandom): { text: string; how: string } {
  const base = CONFIGS[random.int(CONFIGS.length)]!;
  switch (random.int(4)) {
    case 0: {
      const lines = base.split('\n');
      const a = random.int(lines.length);
      const b = random.int(lines.length);
      const op = random.int(3);
      if (op === 0) lines.splice(a, 1);
      else if (op === 1) lines.splice(a, 0, lines[b]!);
      else lines[a] = ' '.repeat(random.int(9)) + lines[a]!.trimStart();
      return { text: lines.join('\n'), how: `line ${a} ${['removed', 'duplicated', 're-indented'][op]}` };
    }
    case 1: {
      let text = base;
      for (let i = 1 + random.int(3); i > 0; i--) {
        const at = random.int(text.length + 1);
        text = text.slice(0, at) + YAML_TOKENS[random.int(YAML_TOKENS.length)]! + text.slice(at);
      }
      return { text, how: 'YAML tokens inserted' };
    }
    case 2: {
      const { bytes, how } = mutated(random, Buffer.from(base, 'utf8'));
      return { text: bytes.toString(random.int(2) === 0 ? 'utf8' : 'latin1'), how };
    }
    default: {
      const { text, how } = mutateJson(JSON.parse(CONFIGS[2]!), random);
      return { text, how: `as JSON: ${how}` };
    }
  }
}

function sampleTree(random: SeededRandom): Tree {
  const nodes: Tree['nodes'] = [];
  const names = Array.from({ length: 1 + random.int(12) }, (_, i) => `n${i}-${random.int(1000)}`).sort();
  for (const name of [...new Set(names)]) {
    const common = { name, mode: 0o100644, uid: random.int(2000), gid: 0, mtimeNs: String(1.7e18 + random.int(1e9)) };
    const kind = random.int(3);
    if (kind === 0) {
      const content = Array.from({ length: random.int(4) }, () => ({
        id: hex(random),
        length: 1 + random.int(1 << 20),
      }));
      nodes.push({ ...common, type: 'file', size: content.reduce((n, c) => n + c.length, 0), content });
    } else if (kind === 1) nodes.push({ ...common, mode: 0o40755, type: 'dir', subtree: hex(random) });
    else nodes.push({ ...common, mode: 0o120777, type: 'symlink', target: `../${name}` });
  }
  return { nodes };
}

function samplePacks(random: SeededRandom): IndexedPack[] {
  return Array.from({ length: 1 + random.int(4) }, () => {
    let offset = 0;
    const blobs = Array.from({ length: random.int(6) }, () => {
      const length = 29 + random.int(5000);
      const blob = {
        id: hex(random),
        type: random.int(2) === 0 ? ('data' as const) : ('tree' as const),
        offset,
        length,
        rawLength: length - 28,
      };
      offset += length;
      return blob;
    });
    return { id: hex(random), size: offset + 100, blobs };
  });
}

describe('decoders under random and mutated input', { timeout: 120_000 }, () => {
  test('the config file parser (parseConfig)', async (t) => {
    t.diagnostic(`seed ${seed} (replay: QUIESCE_TEST_SEED=${seed})`);
    const random = seededRandom(seed);
    for (const text of CONFIGS) parseConfig(text, 'seed.yaml'); // the seeds themselves are valid
    const result = tally('config');
    for (let i = 0; i < count(2000); i++) {
      const { text, how } = mutatedConfig(random);
      await attempt(
        result,
        `config ${i} (${how})`,
        () => parseConfig(text, 'fuzz.yaml'),
        (config) => (Array.isArray(config.paths) && Array.isArray(config.writers) ? null : 'no paths or writers'),
        ConfigError,
      );
    }
    report(t, result);
  });

  test('the tree decoder (parseTree: plain-shape guards, then TreeSchema)', async (t) => {
    const random = seededRandom(seed + 1);
    const result = tally('tree');
    for (let i = 0; i < count(5000); i++) {
      const tree = sampleTree(random);
      const { bytes, how } = mutated(random, serializeTree(tree), tree);
      await attempt(
        result,
        `tree ${i} (${how})`,
        () => parseTree('f'.repeat(64), bytes),
        (value) => {
          const again = TreeSchema.safeParse(value);
          if (!again.success) return `the schema refuses it: ${again.error.issues[0]?.message}`;
          serializeTree(value); // a decoded tree can be written again
          return null;
        },
      );
    }
    report(t, result);
  });

  test('the index decoder (decodeIndex), sealed and as plaintext', async (t) => {
    const random = seededRandom(seed + 2);
    const key = randomBytes(32);
    const result = tally('index');
    for (let i = 0; i < count(4000); i++) {
      const document = { version: 1, packs: samplePacks(random) };
      const plain = Buffer.from(JSON.stringify(document));
      // A fifth of the inputs are damaged sealed objects; the rest sealed damaged plaintexts, which reach the parser.
      const sealedDamage = random.int(5) === 0;
      const { bytes, how } = sealedDamage ? mutated(random, seal(key, plain)) : mutated(random, plain, document);
      const stored = sealedDamage ? bytes : seal(key, bytes);
      await attempt(
        result,
        `index ${i} (${sealedDamage ? 'sealed: ' : ''}${how})`,
        () => decodeIndex(key, stored, 'fuzz'),
        (value) => (IndexFileSchema.safeParse(value).success ? null : 'the schema refuses it'),
      );
    }
    report(t, result);
  });

  test('the manifest envelope (Manifests.load: name, seal, JSON, schema)', async (t) => {
    const random = seededRandom(seed + 3);
    const key = randomBytes(32);
    const backend = new MemoryBackend('memory:fuzz');
    const manifests = new Manifests(backend, { encryption: key, mac: key, chunkerSeed: key });
    const result = tally('manifest');
    for (let i = 0; i < count(2500); i++) {
      const document = {
        version: 1,
        setId: `20261204T0000${random.int(99)}Z-abcdef`,
        time: new Date().toISOString(),
        tree: hex(random),
        meta: { kind: 'backup', tags: ['a'], report: { stats: { files: random.int(100) } } },
      };
      const sealedDamage = random.int(5) === 0;
      const plain = Buffer.from(JSON.stringify(document));
      const { bytes, how } = sealedDamage ? mutated(random, seal(key, plain)) : mutated(random, plain, document);
      const stored = sealedDamage ? bytes : seal(key, bytes);
      // Stored under its hash, or (a few) under another name: the name proves the content first.
      const name = random.int(10) === 0 ? hex(random) : sha256Hex(stored);
      await backend.save('manifests', name, stored);
      await attempt(
        result,
        `manifest ${i} (${how})`,
        () => manifests.load(name),
        (value) => (ManifestEnvelopeSchema.safeParse(value).success ? null : 'the schema refuses it'),
      );
      await backend.remove('manifests', name);
    }
    report(t, result);
  });

  test('the pack header parser (readPackHeaderFromBytes)', async (t) => {
    const random = seededRandom(seed + 4);
    const key = randomBytes(32);
    const result = tally('pack header');
    for (let i = 0; i < count(3000); i++) {
      const blobs = Array.from({ length: random.int(5) }, () => ({
        id: hex(random),
        type: 'data' as const,
        rawLength: 10,
        sealed: seal(key, random.bytes(10)),
      }));
      const pack = buildPack(key, blobs).bytes;
      let bytes: Buffer;
      let how: string;
      const kind = random.int(3);
      if (kind === 0) ({ bytes, how } = mutated(random, Buffer.from(pack)));
      else {
        // Reach the header's parser: a damaged header sealed again, with a right or wrong length.
        const document = {
          version: 1,
          created: new Date().toISOString(),
          blobs: blobs.map((b, n) => ({ id: b.id, type: 'data', offset: n * 38, length: 38, rawLength: 10 })),
        };
        const damaged = mutated(random, Buffer.from(JSON.stringify(document)), document);
        const sealedHeader = seal(key, damaged.bytes);
        const length = Buffer.alloc(4);
        length.writeUInt32LE(kind === 1 ? sealedHeader.length : random.int(2) === 0 ? 0xffffffff : random.int(1 << 16));
        const body = pack.subarray(0, blobs.length * 38);
        bytes = Buffer.concat([body, sealedHeader, length]);
        how = `header: ${damaged.how}${kind === 2 ? ', wrong length' : ''}`;
      }
      await attempt(
        result,
        `pack ${i} (${how})`,
        () => readPackHeaderFromBytes(key, bytes, 'fuzz'),
        (value) => {
          if (!PackHeaderSchema.safeParse(value).success) return 'the schema refuses it';
          const end = bytes.length - 4 - bytes.readUInt32LE(bytes.length - 4);
          return value.blobs.every((b) => b.offset + b.length <= end) ? null : 'a blob lies outside the pack';
        },
      );
    }
    report(t, result);
  });

  test('the key file parser (openKeyFile)', async (t) => {
    const random = seededRandom(seed + 5);
    const master = randomBytes(32);
    const { bytes: keyFile } = await createKeyFile(master, 'pw', { N: 16, r: 1, p: 1 });
    const document = JSON.parse(keyFile.toString()) as Record<string, unknown>;
    assert.deepEqual(await openKeyFile(keyFile, 'pw'), master, 'the seed opens');
    const result = tally('key file');
    for (let i = 0; i < count(2000); i++) {
      const { bytes, how } = mutated(random, keyFile, document);
      await attempt(
        result,
        `key file ${i} (${how})`,
        () => openKeyFile(bytes, 'pw'),
        // null is the parser's refusal: not a key file, or not opened by this password.
        (value) => (value === null ? REFUSED : value.equals(master) ? null : 'a wrong master secret'),
      );
    }
    report(t, result);
  });

  test('the repository config (decodeConfig)', async (t) => {
    const random = seededRandom(seed + 6);
    const key = randomBytes(32);
    const document = {
      version: 1,
      id: hex(random),
      chunker: { minSize: 512 << 10, avgSize: 1 << 20, maxSize: 8 << 20 },
      compression: { algorithm: 'zstd', level: 3 },
    };
    const encoded = encodeConfig(key, RepositoryConfigSchema.parse(document));
    const result = tally('repository config');
    for (let i = 0; i < count(2000); i++) {
      const plainDamage = random.int(4) !== 0;
      let bytes: Buffer;
      let how: string;
      if (plainDamage) {
        const damaged = mutated(random, Buffer.from(JSON.stringify(document)), document);
        bytes = Buffer.concat([encoded.subarray(0, 5), seal(key, damaged.bytes)]);
        how = damaged.how;
      } else ({ bytes, how } = mutated(random, encoded));
      await attempt(
        result,
        `repository config ${i} (${how})`,
        () => decodeConfig(key, bytes, 'memory:fuzz'),
        (value) => (RepositoryConfigSchema.safeParse(value).success ? null : 'the schema refuses it'),
      );
    }
    report(t, result);
  });
});
