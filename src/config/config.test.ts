import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { QuiesceError } from '../model/index.ts';
import {
  ConfigError,
  defaultConfig,
  defaultDirs,
  formatDuration,
  loadConfig,
  parseConfig,
  parseDuration,
  type ConfigIssue,
  type ExecWriterConfig,
  type RemoteWriterConfig,
  type SqliteWriterConfig,
} from './index.ts';

const FILE = 'quiesce.yaml';

/** A document from lines, so that line N of the file is argument N. */
const lines = (...text: string[]): string => `${text.join('\n')}\n`;

function mistakes(text: string): ConfigError {
  try {
    parseConfig(text, FILE);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    return error;
  }
  assert.fail('the config was accepted');
}

/** Asserts that the error has an issue at `line` for `field` whose message matches, and that its message says so. */
function assertIssue(error: ConfigError, line: number, field: string, message: RegExp): ConfigIssue {
  const issue = error.issues.find(
    (candidate) => candidate.line === line && candidate.field === field && message.test(candidate.message),
  );
  assert.ok(
    issue,
    `no issue at line ${line} for ${field || '(document)'} matching ${String(message)}; got:\n${error.message}`,
  );
  const where = field === '' ? `${FILE}:${line}:${issue.column}: ` : `${FILE}:${line}:${issue.column}: ${field}: `;
  assert.ok(error.message.includes(where), `the message lacks "${where}":\n${error.message}`);
  return issue;
}

void describe('a valid config', () => {
  void test('the full example parses, with durations in ms, commands as argv and defaults applied', () => {
    const config = parseConfig(
      lines(
        'repository: /var/backups/quiesce',
        'stateDir: /var/lib/quiesce',
        'registrationDir: /run/quiesce/writers',
        'stagingDir: /var/tmp/quiesce/',
        'policy: { quiesce: prefer, freezeTimeout: 60s, commitTimeout: 10s }',
        'writers:',
        '  - { type: sqlite, name: shop, path: /srv/shop/shop.db, usage: back-end, honorFull: true, quiesce: prefer, lockTimeout: 5s }',
        '  - { type: exec, name: cache, freeze: /usr/local/bin/cache-pause, thaw: /usr/local/bin/cache-resume, hooksDir: /etc/quiesce/hooks.d, timeout: 30s, usage: front-end }',
        '  - { type: remote, name: billing, socket: /run/quiesce/writers/billing.sock, quiesce: require }',
        '  - { type: postgres, name: main, connection: "postgres:///postgres?host=/run/postgresql" }',
        '  - { type: sqlite, name: notes, path: /srv/notes.db }',
        '  - { type: exec, name: queue, freeze: [/usr/bin/queuectl, pause, --wait], thaw: ["/opt/my tools/resume"] }',
        '  - { type: remote, name: ledger }',
        'paths: [/srv/files]',
        'providers: { /srv/files: copy }',
        'guests:',
        '  - { name: vm1, agent: "tls://10.0.0.5:7443", certificate: /etc/quiesce/guests/vm1.crt, disks: [/var/lib/vms/vm1.img], quiesce: prefer, honorFull: true }',
        '  - name: vm2',
        '    disks: [/var/lib/vms/vm2.img]',
        'tls: { key: /etc/quiesce/tls/agent.key, cert: /etc/quiesce/tls/agent.crt }',
      ),
      FILE,
    );
    assert.equal(config.repository, '/var/backups/quiesce');
    assert.equal(config.stateDir, '/var/lib/quiesce');
    assert.equal(config.stagingDir, '/var/tmp/quiesce', 'paths are normalised');
    assert.deepEqual(config.policy, { quiesce: 'prefer', freezeTimeout: 60_000, commitTimeout: 10_000 });
    assert.equal(config.writers.length, 7);

    const [shop, cache, billing, main, notes, queue, ledger] = config.writers;
    assert.deepEqual(shop, {
      type: 'sqlite',
      name: 'shop',
      path: '/srv/shop/shop.db',
      usage: 'back-end',
      honorFull: true,
      quiesce: 'prefer',
      lockTimeout: 5_000,
    } satisfies SqliteWriterConfig);
    assert.deepEqual(cache, {
      type: 'exec',
      name: 'cache',
      freeze: ['/usr/local/bin/cache-pause'],
      thaw: ['/usr/local/bin/cache-resume'],
      hooksDir: '/etc/quiesce/hooks.d',
      timeout: 30_000,
      usage: 'front-end',
      honorFull: true,
    } satisfies ExecWriterConfig);
    assert.deepEqual(billing, {
      type: 'remote',
      name: 'billing',
      socket: '/run/quiesce/writers/billing.sock',
      quiesce: 'require',
      honorFull: true,
    } satisfies RemoteWriterConfig);
    assert.deepEqual(main, {
      type: 'postgres',
      name: 'main',
      connection: 'postgres:///postgres?host=/run/postgresql',
      honorFull: true,
    });
    // Defaults: honorFull true, lockTimeout 5s, exec timeout 30s; quiesce and usage left out (the policy's, the writer's own).
    assert.deepEqual(notes, {
      type: 'sqlite',
      name: 'notes',
      path: '/srv/notes.db',
      honorFull: true,
      lockTimeout: 5_000,
    });
    assert.ok(queue?.type === 'exec');
    assert.deepEqual(queue.freeze, ['/usr/bin/queuectl', 'pause', '--wait']);
    assert.deepEqual(queue.thaw, ['/opt/my tools/resume'], 'a command string is one executable, never split on spaces');
    assert.equal(queue.timeout, 30_000);
    assert.ok(ledger?.type === 'remote');
    assert.equal(
      ledger.socket,
      '/run/quiesce/writers/ledger.sock',
      "a remote writer's socket defaults to <registrationDir>/<name>.sock",
    );

    assert.deepEqual(config.paths, ['/srv/files']);
    assert.deepEqual(config.providers, { '/srv/files': 'copy' });
    assert.deepEqual(config.guests, [
      {
        name: 'vm1',
        agent: 'tls://10.0.0.5:7443',
        certificate: '/etc/quiesce/guests/vm1.crt',
        disks: ['/var/lib/vms/vm1.img'],
        quiesce: 'prefer',
        honorFull: true,
      },
      { name: 'vm2', disks: ['/var/lib/vms/vm2.img'], honorFull: true },
    ]);
  });

  void test('a minimal file gets every default', () => {
    const config = parseConfig(lines('paths: [/srv/files]'), FILE);
    const dirs = defaultDirs();
    assert.deepEqual(config, {
      paths: ['/srv/files'],
      policy: { quiesce: 'prefer', freezeTimeout: 60_000, commitTimeout: 10_000 },
      writers: [],
      providers: {},
      guests: [],
      stateDir: dirs.stateDir,
      registrationDir: dirs.registrationDir,
      stagingDir: dirs.stagingDir,
    });
  });

  void test('durations: units, bare milliseconds, and the limits of a timer', () => {
    assert.equal(parseDuration('250ms'), 250);
    assert.equal(parseDuration('10s'), 10_000);
    assert.equal(parseDuration('2m'), 120_000);
    assert.equal(parseDuration('1.5m'), 90_000);
    assert.equal(parseDuration('1h'), 3_600_000);
    assert.equal(parseDuration(1500), 1500);
    assert.throws(() => parseDuration('10'), /no unit/);
    assert.throws(() => parseDuration('0s'), /longer than zero/);
    assert.throws(() => parseDuration('1000h'), /too long/);
    assert.equal(formatDuration(90_000), '90s');
    assert.equal(formatDuration(120_000), '2m');
    const config = parseConfig(lines('policy: { freezeTimeout: 1500, commitTimeout: 2m }'), FILE);
    assert.deepEqual(config.policy, { quiesce: 'prefer', freezeTimeout: 1500, commitTimeout: 120_000 });
  });

  void test('default directories follow root or the XDG directories', () => {
    assert.deepEqual(defaultDirs({}, 0, '/root'), {
      stateDir: '/var/lib/quiesce',
      registrationDir: '/run/quiesce/writers',
      stagingDir: '/var/tmp/quiesce',
    });
    assert.deepEqual(defaultDirs({}, 1000, '/home/ann'), {
      stateDir: '/home/ann/.local/state/quiesce',
      registrationDir: '/home/ann/.local/state/quiesce/writers',
      stagingDir: '/home/ann/.cache/quiesce/staging',
    });
    assert.deepEqual(
      defaultDirs(
        { XDG_RUNTIME_DIR: '/run/user/1000', XDG_STATE_HOME: '/st', XDG_CACHE_HOME: 'relative' },
        1000,
        '/home/ann',
      ),
      {
        stateDir: '/st/quiesce',
        registrationDir: '/run/user/1000/quiesce/writers',
        stagingDir: '/home/ann/.cache/quiesce/staging',
      },
    );
  });

  void test('defaultConfig: the embedded defaults, with overrides validated like a file', () => {
    const config = defaultConfig({ paths: ['/srv/files'], policy: { quiesce: 'require' } });
    assert.deepEqual(config.paths, ['/srv/files']);
    assert.equal(config.policy.quiesce, 'require');
    assert.equal(config.policy.freezeTimeout, 60_000);
    assert.deepEqual(defaultConfig().writers, []);
    assert.throws(
      () => defaultConfig({ paths: ['srv'] }),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.match(error.message, /^<defaults>: paths\[0\]: must be an absolute path/);
        return true;
      },
    );
  });
});

void describe('every mistake is reported with its line and field', () => {
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

  void test('a bad enum value lists the allowed ones', () => {
    const error = mistakes(lines('writers:', '  - { type: remote, name: billing, quiesce: maybe }'));
    assertIssue(error, 2, 'writers[0].quiesce', /expected one of require, prefer, off; got "maybe"/);
  });

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

  void test('a guest and agent config that is right parses with its defaults', () => {
    const config = parseConfig(
      lines(
        'tls: { key: /etc/quiesce/tls/agent.key, cert: /etc/quiesce/tls/agent.crt }',
        'guests:',
        '  - { name: vm1, agent: "tls://10.0.0.5:7443", certificate: /etc/quiesce/guests/vm1.crt, disks: [/var/lib/vms/vm1.img], quiesce: require }',
        '  - { name: vm2, agent: "qga:///run/vm2.qga.sock", disks: [/var/lib/vms/vm2.img], mountpoints: [/, /srv] }',
        '  - { name: vm3, disks: [/var/lib/vms/vm3.img] }',
        'agent: { hosts: [/etc/quiesce/hosts/backup.crt] }',
      ),
      FILE,
    );
    assert.equal(config.guests.length, 3);
    assert.deepEqual(config.agent, {
      listen: '0.0.0.0:7443',
      hosts: ['/etc/quiesce/hosts/backup.crt'],
      freezeFilesystems: true,
      freezeRoot: false,
    });
    assert.equal(config.guests[0]!.honorFull, true);
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

void describe('loadConfig', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  void test('reads a file and names it in errors', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'quiesce-config-'));
    dirs.push(dir);
    const good = join(dir, 'good.yaml');
    await writeFile(good, lines('writers:', '  - { type: sqlite, name: shop, path: /srv/shop.db }'));
    const config = await loadConfig(good);
    assert.equal(config.writers[0]?.name, 'shop');

    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, lines('paths: [/a]', 'guests:', '  - { name: vm1, disks: [vm1.img] }'));
    await assert.rejects(loadConfig(bad), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(
        error.message,
        new RegExp(
          `^${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3:26: guests\\[0\\]\\.disks\\[0\\]: must be an absolute path`,
        ),
      );
      return true;
    });

    await assert.rejects(loadConfig(dir), /cannot read the config file: .*\(EISDIR\)/);
  });
});
