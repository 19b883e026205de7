import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { QuiesceError } from '../model/index.ts';
import { ConfigError, loadConfig } from './index.ts';
import { FILE, assertIssue, lines, mistakes } from './testing.ts';

void describe('YAML mistakes and unreadable files', () => {
  void test('a YAML syntax error', () => {
    const error = mistakes(lines('paths: [/srv/files', 'writers: []'));
    assertIssue(error, 2, '', /^YAML syntax error: .*end with a \]/);
    assert.equal(error.issues.length, 1);
  });

  void test('a duplicate key, with the line of the first', () => {
    const error = mistakes(
      lines('writers:', '  - type: sqlite', '    name: shop', '    path: /srv/shop.db', '    name: shop2'),
    );
    const issue = assertIssue(error, 5, 'writers[0].name', /duplicate key "name" \(first at line 3\)/);
    assert.equal(issue.column, 5);
  });

  void test('a file that is not there names the file and the OS error', async () => {
    const file = join(tmpdir(), `quiesce-no-such-${process.pid}.yaml`);
    await assert.rejects(loadConfig(file), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.ok(error instanceof QuiesceError);
      assert.equal(error.code, 'bad-config');
      assert.equal(error.message, `${file}: cannot read the config file: no such file or directory (ENOENT)`);
      assert.deepEqual(error.issues, [
        {
          file,
          line: 0,
          column: 0,
          field: '',
          message: 'cannot read the config file: no such file or directory (ENOENT)',
        },
      ]);
      return true;
    });
  });

  void test('an empty file (or only comments) is a clear error', () => {
    for (const text of ['', '\n\n', '# nothing here yet\n']) {
      const error = mistakes(text);
      assert.equal(
        error.message,
        'quiesce.yaml:1:1: the config file is empty: write at least one setting, e.g. "writers:" or "paths:"',
      );
    }
  });

  void test('a document that is not a map', () => {
    const error = mistakes(lines('- /srv/files'));
    assert.equal(error.message, 'quiesce.yaml:1:1: the config file must be a map of settings (key: value), got a list');
  });
});

void describe('every mistake is reported with its line and field', () => {
  void test('an unknown top-level key, with a suggestion', () => {
    const error = mistakes(
      lines('paths: [/srv/files]', 'writer:', '  - { type: sqlite, name: shop, path: /srv/shop.db }'),
    );
    const issue = assertIssue(error, 2, 'writer', /unknown key "writer"; did you mean "writers"\?/);
    assert.equal(issue.column, 1);
    assert.equal(error.message, 'quiesce.yaml:2:1: writer: unknown key "writer"; did you mean "writers"?');
  });

  void test("an unknown key inside a writer, suggested from that writer type's keys", () => {
    const error = mistakes(
      lines(
        'writers:',
        '  - { type: exec, name: cache, hooksDir: /etc/quiesce/hooks.d }',
        '  - type: sqlite',
        '    name: shop',
        '    path: /srv/shop.db',
        '    lock_timeout: 3s',
      ),
    );
    const issue = assertIssue(
      error,
      6,
      'writers[1].lock_timeout',
      /unknown key "lock_timeout"; did you mean "lockTimeout"\?/,
    );
    assert.equal(issue.column, 5);
  });

  void test('a wrong type: a string where a list goes, a number where a string goes', () => {
    const error = mistakes(
      lines('paths: /srv/files', 'writers:', '  - { type: sqlite, name: 42, path: /srv/shop.db, honorFull: "yes" }'),
    );
    assertIssue(
      error,
      1,
      'paths',
      /expected a list, got the string "\/srv\/files" \(a list of one is written \[\/srv\/files\]\)/,
    );
    assertIssue(error, 3, 'writers[0].name', /expected a string, got number 42/);
    assertIssue(error, 3, 'writers[0].honorFull', /expected true or false, got the string "yes"/);
  });

  void test('a missing required field points at the map that lacks it', () => {
    const error = mistakes(
      lines('paths: [/srv/files]', 'writers:', '  - type: sqlite', '    name: shop', '    usage: back-end'),
    );
    const issue = assertIssue(error, 3, 'writers[0].path', /required key "path" is missing/);
    assert.equal(issue.column, 5);
  });

  void test('an unknown writer type lists the known ones', () => {
    const error = mistakes(
      lines('writers:', '  - { type: sqlite, name: shop, path: /srv/shop.db }', '  - { type: mysql, name: db }'),
    );
    const issue = assertIssue(
      error,
      3,
      'writers[1].type',
      /unknown writer type "mysql"; known types: sqlite, exec, remote, postgres/,
    );
    assert.equal(issue.column, 13);
  });

  void test('a writer type that is not available yet (postgres) is refused with its line and field', () => {
    const error = mistakes(
      lines(
        'writers:',
        '  - { type: sqlite, name: shop, path: /srv/shop.db }',
        '  - { type: postgres, name: main, connection: "postgres:///postgres?host=/run/postgresql" }',
      ),
    );
    const issue = assertIssue(
      error,
      3,
      'writers[1].type',
      /the postgres writer is not available yet in this version of quiesce: remove it, or use an exec writer/,
    );
    assert.equal(issue.column, 13);
    assert.equal(error.issues.length, 1, 'its other keys (connection) are not reported as unknown');
    assert.equal(error.code, 'bad-config');
  });

  void test('a bad enum value lists the allowed ones', () => {
    const error = mistakes(lines('writers:', '  - { type: remote, name: billing, quiesce: maybe }'));
    assertIssue(error, 2, 'writers[0].quiesce', /expected one of require, prefer, off; got "maybe"/);
  });
});

void describe('bad values and rules across fields', () => {
  void test('a bad duration', () => {
    const error = mistakes(lines('policy:', '  quiesce: require', '  freezeTimeout: 10 parsecs'));
    const issue = assertIssue(
      error,
      3,
      'policy.freezeTimeout',
      /"10 parsecs" is not a duration; write a duration like "250ms", "10s"/,
    );
    assert.equal(issue.column, 18);
  });

  void test('a relative path', () => {
    const error = mistakes(lines('paths:', '  - /srv/files', '  - srv/other', 'stateDir: ~/state'));
    assertIssue(error, 3, 'paths[1]', /must be an absolute path \(starting with "\/"\), got "srv\/other"/);
    assertIssue(error, 4, 'stateDir', /"~" is not expanded/);
  });

  void test('invalid characters in a name', () => {
    const error = mistakes(
      lines(
        'writers:',
        '  - { type: remote, name: "my writer/1" }',
        'guests:',
        '  - { name: .hidden, disks: [/vm.img] }',
      ),
    );
    assertIssue(error, 2, 'writers[0].name', /"my writer\/1" is not a valid name: use 1 to 64 letters, digits/);
    assertIssue(error, 4, 'guests[0].name', /"\.hidden" is not a valid name/);
  });

  void test('duplicate writer names: the second is the mistake', () => {
    const error = mistakes(
      lines(
        'writers:',
        '  - { type: sqlite, name: shop, path: /srv/shop.db }',
        '  - { type: remote, name: billing }',
        '  - { type: sqlite, name: shop, path: /srv/shop2.db }',
        'guests:',
        '  - { name: vm1, disks: [/vm1.img] }',
        '  - { name: vm1, disks: [/vm1b.img] }',
      ),
    );
    assertIssue(error, 4, 'writers[2].name', /duplicate writer name "shop": writers\[0\] already has it/);
    assertIssue(error, 7, 'guests[1].name', /duplicate guest name "vm1"/);
    assert.equal(error.issues.length, 2);
  });

  void test('an exec writer: freeze without thaw, or neither commands nor hooksDir', () => {
    const error = mistakes(
      lines(
        'writers:',
        '  - type: exec',
        '    name: cache',
        '    freeze: /usr/local/bin/cache-pause',
        '  - { type: exec, name: idle }',
      ),
    );
    assertIssue(error, 4, 'writers[0].freeze', /freeze without thaw/);
    assertIssue(error, 5, 'writers[1]', /needs freeze and thaw commands, or a hooksDir/);
  });

  void test("guests and agents: a quiesce agent needs a pinned certificate and this host's identity; a bad listen address; mountpoints only for qga", () => {
    const error = mistakes(
      lines(
        'guests:',
        '  - { name: vm1, agent: "tls://10.0.0.5:7443", disks: [/vm1.img] }',
        '  - { name: vm2, agent: "tls://10.0.0.6:7443", disks: [/vm2.img], mountpoints: [/srv] }',
        '  - { name: vm3, agent: "qga:///run/vm3.sock", disks: [/vm3.img], mountpoints: [srv] }',
        'agent:',
        '  listen: "everywhere"',
        '  hosts: []',
      ),
    );
    assertIssue(error, 2, 'guests[0].agent', /needs its certificate pinned: add certificate:/);
    assertIssue(error, 2, 'guests[0].agent', /needs this host's own identity: add tls:/);
    assertIssue(error, 3, 'guests[1].mountpoints', /mountpoints are for a QEMU guest agent/);
    assertIssue(error, 4, 'guests[2].mountpoints[0]', /must be an absolute path/);
    assertIssue(error, 6, 'agent.listen', /"everywhere" is not an address to listen on; write host:port/);
    assertIssue(error, 7, 'agent.hosts', /at least 1/);
    assertIssue(error, 6, 'agent', /an agent needs its identity: add tls:/);
  });
});

void describe('several mistakes at once', () => {
  void test('several mistakes at once are all reported, in file order', () => {
    const error = mistakes(
      lines(
        'repositry: /var/backups/quiesce', // 1
        'policy:', // 2
        '  quiesce: maybe', // 3
        '  commitTimeout: 10 parsecs', // 4
        'writers:', // 5
        '  - { type: sqlite, name: shop }', // 6
        '  - { type: exec, name: "bad name", freeze: bin/pause }', // 7
        '  - { type: mysql, name: db }', // 8
        '  - { type: sqlite, name: shop, path: /srv/shop.db }', // 9
        'paths: [srv/files]', // 10
      ),
    );
    const expected: [number, string, RegExp][] = [
      [1, 'repositry', /did you mean "repository"/],
      [3, 'policy.quiesce', /expected one of/],
      [4, 'policy.commitTimeout', /not a duration/],
      [6, 'writers[0].path', /required key "path" is missing/],
      [7, 'writers[1].name', /not a valid name/],
      [7, 'writers[1].freeze', /must be an absolute path/],
      [7, 'writers[1].freeze', /freeze without thaw/],
      [8, 'writers[2].type', /unknown writer type "mysql"/],
      [9, 'writers[3].name', /duplicate writer name "shop"/],
      [10, 'paths[0]', /must be an absolute path/],
    ];
    for (const [line, field, message] of expected) assertIssue(error, line, field, message);
    assert.equal(error.issues.length, expected.length, error.message);
    assert.deepEqual(
      error.issues.map((issue) => issue.line),
      [...error.issues.map((issue) => issue.line)].sort((a, b) => a - b),
    );
    const [header, ...rest] = error.message.split('\n');
    assert.equal(header, `${expected.length} problems in config file ${FILE}:`);
    assert.equal(rest.length, expected.length);
    assert.ok(rest.every((line) => line.startsWith(`${FILE}:`)));
  });
});
