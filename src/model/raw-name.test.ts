import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import {
  decodeRawName,
  displayRawName,
  encodeRawName,
  isCanonicalRawName,
  parseRawNameEscapes,
  rawPath,
} from './raw-name.ts';

const bytes = (s: string) => Buffer.from(s, 'latin1');

test('valid UTF-8 names keep their usual form; other bytes become lone surrogates and come back', () => {
  for (const name of ['plain', 'é', '💀', 'a\ufffdb', '日本語']) {
    assert.equal(decodeRawName(Buffer.from(name)), name);
    assert.deepEqual(encodeRawName(name), Buffer.from(name));
    assert.equal(rawPath(`/x/${name}`), `/x/${name}`);
  }
  for (const raw of ['\xff', '\xfe\xfe', 'a\x80b', '\xc3', '\xed\xa0\x80', '\xc0\xaf', '\xf4\x90\x80\x80', 'é\xe9']) {
    const name = decodeRawName(bytes(raw));
    assert.ok(isCanonicalRawName(name));
    assert.deepEqual(encodeRawName(name), bytes(raw), JSON.stringify(name));
    assert.deepEqual(rawPath(`/d/${name}`), Buffer.concat([Buffer.from('/d/'), bytes(raw)]));
  }
  assert.equal(decodeRawName(bytes('\xff')), '\udcff');
  assert.equal(displayRawName(decodeRawName(bytes('a\x80b\xfe'))), 'a\\x80b\\xfe');
});

test('random bytes round-trip, and the escape form of the output reads back', () => {
  for (let i = 0; i < 2000; i++) {
    const raw = randomBytes(1 + (i % 40));
    const name = decodeRawName(raw);
    assert.deepEqual(encodeRawName(name), raw);
    assert.ok(isCanonicalRawName(name));
    if (!name.includes('\\')) assert.equal(parseRawNameEscapes(displayRawName(name)), name);
  }
});

test('names no decode gives are not canonical', () => {
  assert.equal(isCanonicalRawName('\ud800'), false); // a lone high surrogate
  assert.equal(isCanonicalRawName('\udc00'), false); // a low one outside the escapes
  assert.equal(isCanonicalRawName('\udcc3\udca9'), false); // escaped bytes that are valid UTF-8 (é)
  assert.equal(parseRawNameEscapes('/a/\\xc3\\xa9'), '/a/é');
  assert.equal(parseRawNameEscapes('/a/\\x41'), '/a/\\x41'); // only bytes 80..ff are escapes
});
