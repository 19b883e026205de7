// The host's writers for guests of a recursive set: one per guest, whose component is the
// guest's disk images and whose phases drive the guest's own set through its agent.
export {
  createGuestWriter,
  guestMetadata,
  GUEST_DISKS_COMPONENT,
  type GuestAgent,
  type GuestWriterOptions,
} from './guest-writer.ts';
