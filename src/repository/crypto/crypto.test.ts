import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { QuiesceError } from '../../model/index.ts';
import { blobIdOf, createKeyFile, deriveKeys, newMasterSecret, openKeyFile } from './keys.ts';
import { openSealed, seal, SEAL_OVERHEAD, tryOpenSealed } from './seal.ts';

const KDF = { N: 1024, r: 8, p: 1 };

describe('seal', () => {
  const key = Buffer.alloc(32, 1);

  test('round trip, with a fresh nonce each time', () => {
    const plain = Buffer.from('hello repository');
    const a = seal(key, plain);
    const b = seal(key, plain);
    assert.equal(a.length, plain.length + SEAL_OVERHEAD);
    assert.notDeepEqual(a, b);
    assert.deepEqual(openSealed(key, a, 'x'), plain);
    assert.deepEqual(openSealed(key, seal(key, Buffer.alloc(0)), 'x'), Buffer.alloc(0));
  });

  test('one flipped bit, a truncation or another key is damaged', () => {
    const sealed = seal(key, Buffer.from('hello repository'));
    for (let at = 0; at < sealed.length; at += 1) {
      const bad = Buffer.from(sealed);
      bad[at]! ^= 0x10;
      assert.equal(tryOpenSealed(key, bad), null, `flip at ${at}`);
    }
    assert.equal(tryOpenSealed(key, sealed.subarray(0, sealed.length - 1)), null);
    assert.equal(tryOpenSealed(Buffer.alloc(32, 2), sealed), null);
    assert.throws(
      () => openSealed(key, sealed.subarray(3), 'pack abc'),
      (e: unknown) => e instanceof QuiesceError && e.code === 'damaged' && e.message.includes('pack abc'),
    );
  });
});

describe('keys', () => {
  test('derived keys differ from each other and from another master', () => {
    const master = newMasterSecret();
    const keys = deriveKeys(master);
    assert.notDeepEqual(keys.encryption, keys.mac);
    assert.notDeepEqual(keys.mac, keys.chunkerSeed);
    assert.deepEqual(deriveKeys(master), keys);
    assert.notDeepEqual(deriveKeys(newMasterSecret()).mac, keys.mac);
    const id = blobIdOf(keys, Buffer.from('x'));
    assert.match(id, /^[0-9a-f]{64}$/);
    assert.notEqual(id, blobIdOf(deriveKeys(newMasterSecret()), Buffer.from('x')));
  });

  test('a key file opens with its password only', async () => {
    const master = newMasterSecret();
    const { name, bytes } = await createKeyFile(master, 'correct horse', KDF);
    assert.match(name, /^[0-9a-f]{64}$/);
    const file = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
    assert.equal(file.kdf, 'scrypt');
    assert.equal(file.N, 1024);
    assert.deepEqual(await openKeyFile(bytes, 'correct horse'), master);
    assert.equal(await openKeyFile(bytes, 'wrong horse'), null);
    assert.equal(await openKeyFile(Buffer.from('{"not":"a key"}'), 'correct horse'), null);
  });

  test('parameters scrypt refuses within the memory bound are no key file, not a RangeError', async () => {
    const { bytes } = await createKeyFile(newMasterSecret(), 'pw', KDF);
    const file = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
    // N must stay below 2^(16 r): N=2^16 with r=1 is 8 MiB, within the bound, yet scrypt throws at once.
    for (const [N, r] of [
      [2 ** 16, 1],
      [2 ** 17, 1],
    ])
      assert.equal(await openKeyFile(Buffer.from(JSON.stringify({ ...file, N, r })), 'pw'), null);
  });

  test('the default cost (N=2^15, r=8) fits in memory', async () => {
    const master = newMasterSecret();
    const { bytes } = await createKeyFile(master, 'pw');
    assert.deepEqual(await openKeyFile(bytes, 'pw'), master);
  });
});
