import { test } from 'node:test';
import assert from 'node:assert/strict';
import { contains, mountOf, mountPointsBelow, parseMountInfo } from './mounts.ts';

const MOUNTINFO = [
  '22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
  '42 22 7:0 / /srv/with\\040space rw,relatime - xfs /dev/loop0 rw,inode64',
  '43 22 0:50 /sub /srv/btr ro,relatime shared:7 master:2 - btrfs /dev/loop1 ro,subvolid=256',
  '44 22 7:0 / /srv/with\\040space rw,relatime - xfs /dev/loop0 rw',
].join('\n');

test('parses mountinfo, optional fields and octal escapes included', () => {
  const mounts = parseMountInfo(MOUNTINFO);
  assert.deepEqual(mounts[1], {
    mountPoint: '/srv/with space',
    fsType: 'xfs',
    source: '/dev/loop0',
    device: '7:0',
    readOnly: false,
  });
  assert.deepEqual(mounts[2], {
    mountPoint: '/srv/btr',
    fsType: 'btrfs',
    source: '/dev/loop1',
    device: '0:50',
    readOnly: true,
  });
});

test('the mount of a path is the longest mount point holding it, the last one mounted on a tie', () => {
  const mounts = parseMountInfo(MOUNTINFO);
  assert.equal(mountOf('/srv/with space/a/b', mounts), mounts[3]);
  assert.equal(mountOf('/srv/btrfs-not', mounts).mountPoint, '/');
  assert.equal(mountOf('/srv/btr', mounts).mountPoint, '/srv/btr');
  assert.deepEqual([...mountPointsBelow('/srv', mounts)].sort(), ['/srv/btr', '/srv/with space']);
});

test('contains compares whole components', () => {
  assert.equal(contains('/a', '/a/b'), true);
  assert.equal(contains('/a', '/ab'), false);
  assert.equal(contains('/', '/x'), true);
  assert.equal(contains('/a', '/a'), true);
});
