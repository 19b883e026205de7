// The QEMU-guest-agent writer: quiesces a VM guest that runs qemu-ga by freezing its file
// systems through the agent's socket while the host snapshots its disk images (file-system level).
export { createQgaWriter, type QgaWriterOptions } from './qga-writer.ts';
export { createQgaGuest } from './qga-guest.ts';
export { DEFAULT_QGA_TIMEOUT_MS, QgaClient, type QgaCallOptions, type QgaConnectOptions } from './qga-client.ts';
export { QgaErrorAnswer, isErrorAnswer, type FsfreezeStatus } from './qga-answers.ts';
export { MAX_ANSWER_BYTES } from './qga-wire.ts';
