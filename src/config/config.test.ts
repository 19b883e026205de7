import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  ConfigError,
  defaultConfig,
  defaultDirs,
  formatDuration,
  loadConfig,
  parseConfig,
  parseDuration,
  type ExecWriterConfig,
  type RemoteWriterConfig,
  type SqliteWriterConfig,
} from './index.ts';
import { FILE, lines } from './testing.ts';

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
    assert.deepEqual(config.policy, {
      quiesce: 'prefer',
      freezeTimeout: 60_000,
      commitTimeout: 10_000,
      plainPaths: 'after-thaw',
    });
    assert.equal(config.writers.length, 6);

    const [shop, cache, billing, notes, queue, ledger] = config.writers;
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
      policy: { quiesce: 'prefer', freezeTimeout: 60_000, commitTimeout: 10_000, plainPaths: 'after-thaw' },
      writers: [],
      providers: {},
      guests: [],
      stateDir: dirs.stateDir,
      registrationDir: dirs.registrationDir,
      stagingDir: dirs.stagingDir,
    });
  });
});

void describe('durations, default directories and embedded defaults', () => {
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
    assert.deepEqual(config.policy, {
      quiesce: 'prefer',
      freezeTimeout: 1500,
      commitTimeout: 120_000,
      plainPaths: 'after-thaw',
    });
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
