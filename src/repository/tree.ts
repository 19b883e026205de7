import { z } from 'zod';
import { isCanonicalRawName } from '../model/index.ts';

/**
 * A tree is one directory's listing, stored as a `tree` blob (JSON), so unchanged directories
 * deduplicate like file content does. A backup set's manifest points at a root tree.
 */

/**
 * One path element: never empty, `.` or `..`, never with `/` or NUL. Restore trusts nothing else.
 * Bytes that are not valid UTF-8 are kept as lone surrogates (see `decodeRawName`); no other.
 */
export const NodeNameSchema = z
  .string()
  .min(1)
  .max(4096)
  .refine((n) => n !== '.' && n !== '..' && !n.includes('/') && !n.includes('\0'), 'a node name is one path element')
  .refine(isCanonicalRawName, 'a node name is UTF-8 with its other bytes escaped');

/** A piece of a file's content: a blob and its plaintext length. */
export const ContentRefSchema = z.object({
  id: z.string().regex(/^[0-9a-f]{64}$/),
  length: z.number().int().nonnegative(),
});
export type ContentRef = z.infer<typeof ContentRefSchema>;

const common = {
  name: NodeNameSchema,
  mode: z.number().int().nonnegative(),
  uid: z.number().int().nonnegative(),
  gid: z.number().int().nonnegative(),
  /** Nanoseconds since the epoch, as a decimal string (beyond 2^53). */
  mtimeNs: z.string().regex(/^-?\d+$/),
};

/**
 * A hard link's identity within a set: every name of one multiply-linked file carries the same
 * one (`<device>:<inode>` as the backup read it), so restore makes them one file again.
 */
export const HardLinkSchema = z.string().regex(/^\d+:\d+$/);

export const FileNodeSchema = z.object({
  ...common,
  type: z.literal('file'),
  size: z.number().int().nonnegative(),
  content: z.array(ContentRefSchema),
  /** Present only on a file with more than one name (trees written before it lack it). */
  hardlink: HardLinkSchema.optional(),
});
export const DirNodeSchema = z.object({
  ...common,
  type: z.literal('dir'),
  subtree: z.string().regex(/^[0-9a-f]{64}$/),
});
export const SymlinkNodeSchema = z.object({
  ...common,
  type: z.literal('symlink'),
  target: z.string().min(1).max(4096),
});

/** A FIFO or a socket: nothing but its metadata (restore makes FIFOs; sockets, as tar, it does not). */
export const FifoNodeSchema = z.object({ ...common, type: z.literal('fifo') });
export const SocketNodeSchema = z.object({ ...common, type: z.literal('socket') });
/** A character or block device: its device number `rdev` (st_rdev, decimal), remade by root. */
const rdev = z.string().regex(/^\d+$/);
export const CharDeviceNodeSchema = z.object({ ...common, type: z.literal('chardev'), rdev });
export const BlockDeviceNodeSchema = z.object({ ...common, type: z.literal('blockdev'), rdev });

export const NodeSchema = z.discriminatedUnion('type', [
  FileNodeSchema,
  DirNodeSchema,
  SymlinkNodeSchema,
  FifoNodeSchema,
  SocketNodeSchema,
  CharDeviceNodeSchema,
  BlockDeviceNodeSchema,
]);
export type TreeNode = z.infer<typeof NodeSchema>;
export type FileNode = z.infer<typeof FileNodeSchema>;
export type DirNode = z.infer<typeof DirNodeSchema>;
export type SymlinkNode = z.infer<typeof SymlinkNodeSchema>;
/** The nodes with no content: FIFOs, sockets and devices. */
export type SpecialNode =
  | z.infer<typeof FifoNodeSchema>
  | z.infer<typeof SocketNodeSchema>
  | z.infer<typeof CharDeviceNodeSchema>
  | z.infer<typeof BlockDeviceNodeSchema>;

/** Nodes sorted by name (`<`: UTF-16 code units, escaped bytes too), names unique. */
export const TreeSchema = z
  .object({ nodes: z.array(NodeSchema) })
  .refine(
    (t) => t.nodes.every((n, i) => i === 0 || t.nodes[i - 1]!.name < n.name),
    'tree nodes must be sorted by name and unique',
  );
export type Tree = z.infer<typeof TreeSchema>;
