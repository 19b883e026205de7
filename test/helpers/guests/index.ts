// Test "hosts" with "guests" that behave like VMs, without VMs, for the tests of recursive
// (host-to-guest) snapshot sets. The host volume is a loop file system (XFS or btrfs). Each guest
// is a process tree in its own network and private mount namespaces, whose "disk" is an ext4
// image file on the host volume, with the bank (a SQLite application, src/cli/demo/bank.ts)
// writing in it and optionally a command (an agent) running.
export type { BankCheck, WorkerStats } from '../../../src/cli/demo/bank.ts';
export { makeGuestHost, type GuestHost, type GuestHostOptions } from './host.ts';
export type { ExecOptions, ExecResult, StartGuestOptions, TestGuest } from './guest.ts';
export { checkImageBank, loopDevicesOf, mountImage, type MountedImage } from './images.ts';
