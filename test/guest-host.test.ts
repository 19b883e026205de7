// The test guests themselves (test/helpers/guests/): two "VMs" in network and mount
// namespaces on an XFS host volume, each with the bank writing in its own ext4 disk image and a
// TCP server as its command. Root only; skips with the reason otherwise.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { promisify } from 'node:util';
import { ACCOUNTS, TOTAL } from '../src/cli/demo/bank.ts';
import { checkImageBank, loopDevicesOf, makeGuestHost, type TestGuest } from './helpers/guests/index.ts';
import type { LoopFs } from './helpers/loop-fs.ts';

const execFileAsync = promisify(execFile);
const PORT = 7443;
const SERVER = [
  process.execPath,
  '-e',
  `const fs = require('fs');
   require('net')
     .createServer((s) => s.end(fs.readFileSync(process.env.GUEST_MOUNT + '/greeting.txt', 'utf8') + ' from ' + process.env.GUEST_NAME))
     .listen(${PORT}, process.env.GUEST_ADDRESS, () => console.log('listening on ' + process.env.GUEST_ADDRESS));`,
];

/** Connects, reads until the server ends the connection; rejects on error or after `timeoutMs`. */
function fetchGreeting(host: string, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port: PORT });
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer from ${host}:${PORT} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.setEncoding('utf8').on('data', (chunk: string) => (data += chunk));
    socket.once('end', () => {
      clearTimeout(timer);
      resolve(data);
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

async function progressAdvances(guest: TestGuest): Promise<void> {
  const start = await guest.bankProgress();
  const until = Date.now() + 5000;
  while ((await guest.bankProgress()) <= start) {
    if (Date.now() > until) assert.fail(`the bank of ${guest.name} made no progress in 5 s`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function leftovers(names: string[]): Promise<string[]> {
  const found: string[] = [];
  const netns = (await execFileAsync('ip', ['netns', 'list'])).stdout;
  const links = (await execFileAsync('ip', ['-o', 'link', 'show'])).stdout;
  const routes = (await execFileAsync('ip', ['route', 'show'])).stdout;
  const loops = (await execFileAsync('losetup', ['-a'])).stdout;
  const mounts = await readFile('/proc/mounts', 'utf8');
  for (const name of names) {
    for (const [what, text] of [
      ['netns', netns],
      ['link', links],
      ['route', routes],
      ['loop device', loops],
      ['mount', mounts],
    ] as const) {
      for (const line of text.split('\n')) if (line.includes(name)) found.push(`${what}: ${line}`);
    }
  }
  return found;
}

const host = await makeGuestHost({ fs: 'xfs' });

if ('skip' in host) {
  test('guests in network and mount namespaces', { skip: host.skip }, () => {});
} else {
  describe('guests in network and mount namespaces on an XFS host volume', { timeout: 90_000 }, () => {
    let g1: TestGuest;
    let g2: TestGuest;
    after(() => host.cleanup());

    before(async () => {
      const start = (name: string) =>
        host.startGuest({
          name,
          command: SERVER,
          commandReady: /^listening/,
          files: { 'greeting.txt': `hello from the disk of ${name}` },
        });
      [g1, g2] = await Promise.all([start('guest-a'), start('guest-b')]);
    });

    test('each guest has its own address, and the host reaches its command there', async () => {
      assert.notEqual(g1.address, g2.address);
      assert.match(g1.address, /^10\.213\.\d+\.2$/);
      assert.equal(await fetchGreeting(g1.address), 'hello from the disk of guest-a from guest-a');
      assert.equal(await fetchGreeting(g2.address), 'hello from the disk of guest-b from guest-b');
      const inside = await g1.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
      assert.equal(inside.code, 0, inside.stderr);
      assert.match(inside.stdout, new RegExp(`inet ${g1.address.replaceAll('.', '\\.')}/30`));
      // Guests have no route to each other: only their own /30.
      const across = await g1.exec([
        process.execPath,
        '-e',
        `require('net').connect(${PORT}, '${g2.address}').on('connect', () => process.exit(0)).on('error', (e) => { console.log(e.code); process.exit(3); })`,
      ]);
      assert.equal(across.code, 3, `guest-a reached guest-b: ${across.stdout}${across.stderr}`);
      assert.match(across.stdout, /ENETUNREACH|EHOSTUNREACH/);
    });

    test('the disk is mounted in the guest only', () => diskInGuestOnly([g1, g2], host.volume));

    test('a link down cuts the network, a link up restores it; the guest lives on', () => linkDownAndUp(g1, g2));

    test('killing the command leaves the bank running; restarting brings it back', async () => {
      const old = g1.commandPid();
      assert.ok(old !== null);
      assert.deepEqual(await g1.killCommand('SIGKILL'), { code: null, signal: 'SIGKILL' });
      assert.equal(g1.commandPid(), null);
      assert.throws(() => process.kill(old, 0), { code: 'ESRCH' });
      await assert.rejects(fetchGreeting(g1.address), { code: 'ECONNREFUSED' });
      await progressAdvances(g1);
      const pid = await g1.restartCommand();
      assert.equal(g1.commandPid(), pid);
      assert.notEqual(pid, old);
      assert.equal(await fetchGreeting(g1.address), 'hello from the disk of guest-a from guest-a');
    });

    test("a frozen disk blocks the guest's writers; exec answers at its timeout; a thaw resumes them", () =>
      frozenDiskBlocksWriters(g2));

    test("each guest's application commits transfers without errors", async () => {
      for (const guest of [g1, g2]) {
        const stats = await guest.stopBank();
        assert.equal(stats.length, 2);
        for (const worker of stats) {
          assert.ok(worker.transfers > 0, `${guest.name}: ${JSON.stringify(worker)}`);
          assert.equal(worker.errors, 0, `${guest.name}: ${JSON.stringify(worker)}`);
        }
        assert.deepEqual(await guest.stopBank(), stats, 'stopBank answers the same again');
      }
    });

    test("a stopped guest's disk holds a consistent bank", async () => {
      await Promise.all([g1.stop(), g2.stop()]);
      await g1.stop(); // idempotent
      for (const guest of [g1, g2]) {
        assert.ok(guest.exited);
        assert.deepEqual(await loopDevicesOf(guest.image), []);
        assert.deepEqual(await checkImageBank(guest.image), { integrity: 'ok', sum: TOTAL, accounts: ACCOUNTS });
        await assert.rejects(
          fetchGreeting(guest.address, 1000),
          { code: 'EHOSTUNREACH' },
          'a stopped guest is unreachable',
        );
      }
    });

    test('cleanup leaves no namespace, link, loop device or mount behind', async () => {
      const subnet = (guest: TestGuest) => `${guest.address.replace(/\.2$/, '.0')}/30`;
      const names = [
        g1.netns,
        g2.netns,
        g1.hostLink,
        g2.hostLink,
        subnet(g1),
        subnet(g2),
        dirname(host.volume.mountPoint),
      ];
      await host.cleanup();
      const until = Date.now() + 5000; // a detach can lag while something still holds the device
      let left = await leftovers(names);
      while (left.length > 0 && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 50));
        left = await leftovers(names);
      }
      assert.deepEqual(left, []);
    });
  });
}

async function diskInGuestOnly(guests: TestGuest[], volume: LoopFs): Promise<void> {
  for (const guest of guests) {
    const seen = await guest.exec(['findmnt', '-n', '-o', 'FSTYPE,SOURCE', guest.mountPoint]);
    assert.equal(seen.code, 0, seen.stderr);
    assert.match(seen.stdout, /^ext4\s+\/dev\/loop\d+/);
    const cat = await guest.exec(['cat', 'greeting.txt'], { cwd: guest.mountPoint });
    assert.equal(cat.stdout, `hello from the disk of ${guest.name}`);
    const guestMounts = await guest.exec(['cat', '/proc/self/mounts']);
    assert.ok(!guestMounts.stdout.includes(volume.mountPoint), 'the guest does not see the host volume');
    assert.ok(
      !(await readFile('/proc/mounts', 'utf8')).includes(guest.mountPoint),
      'the host sees no mount of the guest disk',
    );
    const onHost = await readdir(guest.mountPoint).catch((error: NodeJS.ErrnoException) =>
      error.code === 'ENOENT' ? [] : Promise.reject(error),
    );
    assert.deepEqual(onHost, [], 'the mount point is empty on the host');
    assert.equal(dirname(guest.image), volume.workDir);
    assert.equal((await loopDevicesOf(guest.image)).length, 1, 'one loop device backs the disk');
  }
}

async function linkDownAndUp(g1: TestGuest, g2: TestGuest): Promise<void> {
  await g1.linkDown();
  try {
    // The host fails at once (the fallback route: its packets never leave the machine) ...
    await assert.rejects(fetchGreeting(g1.address, 1000), { code: 'EHOSTUNREACH' });
    // ... while the guest's packets to the host vanish: it sees a silent network.
    const out = await g1.exec([
      process.execPath,
      '-e',
      `const s = require('net').connect(${PORT}, process.env.GUEST_HOST_ADDRESS); s.setTimeout(500, () => { console.log('timeout'); process.exit(0); }); s.on('error', (e) => { console.log(e.code); process.exit(0); });`,
    ]);
    assert.equal(out.stdout.trim(), 'timeout', out.stderr);
    await progressAdvances(g1);
    assert.equal(
      await fetchGreeting(g2.address),
      'hello from the disk of guest-b from guest-b',
      'the other guest is unaffected',
    );
  } finally {
    await g1.linkUp();
  }
  assert.equal(await fetchGreeting(g1.address), 'hello from the disk of guest-a from guest-a');
}

async function frozenDiskBlocksWriters(g2: TestGuest): Promise<void> {
  const freeze = await g2.exec(['fsfreeze', '-f', g2.mountPoint]);
  assert.equal(freeze.code, 0, freeze.stderr);
  try {
    const started = Date.now();
    const write = await g2.exec(['/bin/sh', '-c', 'echo x > probe'], { cwd: g2.mountPoint, timeoutMs: 300 });
    assert.equal(write.timedOut, true, 'a write to a frozen disk blocks');
    assert.ok(Date.now() - started < 2000, 'exec does not wait for a process stuck on the frozen disk');
  } finally {
    // From the host: the guest's mount namespace is reachable through /proc/<pid>/root.
    await execFileAsync('fsfreeze', ['-u', `/proc/${g2.mainPid}/root${g2.mountPoint}`]);
  }
  await progressAdvances(g2);
  const write = await g2.exec(['/bin/sh', '-c', 'echo y > probe && cat probe'], {
    cwd: g2.mountPoint,
    timeoutMs: 5000,
  });
  assert.equal(write.stdout, 'y\n', write.stderr);
}
