// A damaged key file and a damaged index object, met at open (issue 19, item 6): named for what
// they are, never blamed on the password or dropped without a word.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemoryBackend } from './backend/memory-backend.ts';
import { initRepository, openRepository } from './open.ts';
import { PASSWORD, SMALL as OPTIONS, isCode, pseudoRandom } from './testing.ts';

async function oneKeyRepository(): Promise<{ backend: MemoryBackend; key: string }> {
  const backend = new MemoryBackend();
  await (await initRepository(backend, PASSWORD, OPTIONS)).close();
  return { backend, key: backend.names('keys')[0]! };
}

function edited(bytes: Buffer, edit: (file: Record<string, unknown>) => void): Buffer {
  const file = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
  edit(file);
  return Buffer.from(JSON.stringify(file));
}

describe('a damaged key file', () => {
  const damages: [string, (bytes: Buffer) => Buffer, RegExp][] = [
    ['emptied', () => Buffer.alloc(0), /it is empty/],
    ['cut in half', (b) => b.subarray(0, b.length >> 1), /not valid JSON/],
    ['garbage', (b) => pseudoRandom(b.length, 'garbage'), /not valid JSON/],
    ['a salt of bad length', (b) => edited(b, (f) => (f.salt = Buffer.alloc(7).toString('base64'))), /salt is 7 bytes/],
    [
      'a sealed key of bad length',
      (b) => edited(b, (f) => (f.data = Buffer.alloc(20).toString('base64'))),
      /sealed key is 20 bytes/,
    ],
    ['bad KDF parameters', (b) => edited(b, (f) => (f.N = 1000)), /not a valid key file \(N:/],
    ['a huge KDF cost', (b) => edited(b, (f) => ((f.N = 2 ** 30), (f.r = 8))), /need more than 1 GiB/],
    [
      'one byte flipped in its sealed key',
      (b) =>
        edited(b, (f) => {
          const data = Buffer.from(f.data as string, 'base64');
          data[20]! ^= 1;
          f.data = data.toString('base64');
        }),
      /bytes no longer match its name/,
    ],
  ];
  for (const [what, damage, reason] of damages) {
    test(`${what}: "damaged", naming the key file, not "wrong password"`, async () => {
      const { backend, key } = await oneKeyRepository();
      backend.put('keys', key, damage(backend.get('keys', key)));
      await assert.rejects(openRepository(backend, PASSWORD), (error: Error) => {
        assert.ok(isCode('damaged', `key file keys/${key} is damaged`)(error), error.message);
        assert.match(error.message, reason);
        assert.doesNotMatch(error.message, /password does not open/);
        return true;
      });
    });
  }

  test('a wrong password with one damaged key among intact ones: wrong-password, and the damaged key named', async () => {
    const { backend, key } = await oneKeyRepository();
    const repo = await openRepository(backend, PASSWORD);
    await repo.addPassword('another password');
    await repo.close();
    backend.put('keys', key, Buffer.from('{"version":'));
    await assert.rejects(openRepository(backend, 'not the password'), (error: Error) => {
      assert.ok(isCode('wrong-password', 'does not open any key')(error), error.message);
      assert.match(error.message, new RegExp(`key file keys/${key} is damaged`));
      return true;
    });
    await (await openRepository(backend, 'another password')).close();
  });

  test('a wrong password on intact keys still says only that', async () => {
    const { backend } = await oneKeyRepository();
    await assert.rejects(openRepository(backend, 'not the password'), (error: Error) => {
      assert.ok(isCode('wrong-password')(error));
      assert.doesNotMatch(error.message, /damaged/);
      return true;
    });
  });
});

describe('a damaged index object', () => {
  test('is named once at open, and a blob it listed is reported with what to run', async () => {
    const backend = new MemoryBackend();
    const repo = await initRepository(backend, PASSWORD, OPTIONS);
    const saved = await repo.saveBlob('data', pseudoRandom(5000, 'a'));
    await repo.flush();
    await repo.close();
    const [index] = backend.names('index');
    const bytes = Buffer.from(backend.get('index', index!));
    bytes[bytes.length >> 1]! ^= 1;
    backend.put('index', index!, bytes);
    const warnings: string[] = [];
    const fresh = await openRepository(backend, PASSWORD, { workers: 0, onWarning: (m) => warnings.push(m) });
    try {
      await (await fresh.lock('shared')).release(); // a reload: warned once only
      assert.equal(warnings.length, 1, warnings.join('\n'));
      assert.match(warnings[0]!, new RegExp(`index object index/${index} .* is damaged.*quiesce repair index`));
      await assert.rejects(
        fresh.loadBlob(saved.id),
        isCode('damaged', `index/${index} is damaged: run quiesce repair index`),
      );
    } finally {
      await fresh.close();
    }
  });
});
