import type { BigIntStats } from 'node:fs';
import type { CallOptions } from '../model/index.ts';
import type { Repository, SpecialNode, TreeNode } from '../repository/index.ts';

/** The metadata every node carries, whatever its type. */
export interface NodeMetadata {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  mtimeNs: string;
}

/** The common metadata of a node; `stats` null (an original parent that vanished) gives a plain directory. */
export function nodeMetadata(name: string, stats: BigIntStats | null): NodeMetadata {
  if (!stats) return { name, mode: 0o40755, uid: 0, gid: 0, mtimeNs: '0' };
  return {
    name,
    mode: Number(stats.mode),
    uid: Number(stats.uid),
    gid: Number(stats.gid),
    mtimeNs: stats.mtimeNs.toString(),
  };
}

/** A FIFO, socket or device as a node (its metadata, a device's number); null for anything else. */
export function specialNode(name: string, stats: BigIntStats): SpecialNode | null {
  const meta = nodeMetadata(name, stats);
  if (stats.isFIFO()) return { ...meta, type: 'fifo' };
  if (stats.isSocket()) return { ...meta, type: 'socket' };
  if (stats.isCharacterDevice()) return { ...meta, type: 'chardev', rdev: stats.rdev.toString() };
  if (stats.isBlockDevice()) return { ...meta, type: 'blockdev', rdev: stats.rdev.toString() };
  return null;
}

/** Are two sorted lists of nodes the same, so that they make the same tree? */
export function sameNodes(a: readonly TreeNode[], b: readonly TreeNode[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (!sameNode(a[i]!, b[i]!)) return false;
  }
  return true;
}

function sameNode(x: TreeNode, y: TreeNode): boolean {
  if (
    x.name !== y.name ||
    x.type !== y.type ||
    x.mode !== y.mode ||
    x.uid !== y.uid ||
    x.gid !== y.gid ||
    x.mtimeNs !== y.mtimeNs
  )
    return false;
  if (x.type === 'dir' && x.subtree !== (y as typeof x).subtree) return false;
  if (x.type === 'symlink' && x.target !== (y as typeof x).target) return false;
  if ((x.type === 'chardev' || x.type === 'blockdev') && x.rdev !== (y as typeof x).rdev) return false;
  if (x.type === 'file') {
    const other = y as typeof x;
    if (x.size !== other.size || x.content.length !== other.content.length || x.hardlink !== other.hardlink)
      return false;
    if (
      x.content !== other.content &&
      x.content.some((c, k) => c.id !== other.content[k]!.id || c.length !== other.content[k]!.length)
    )
      return false;
  }
  return true;
}

/** Finds the node of an original absolute path in a tree. */
export async function findNode(
  repository: Repository,
  tree: string,
  original: string,
  options: CallOptions = {},
): Promise<TreeNode | null> {
  const parts = original.split('/').filter(Boolean);
  let current = tree;
  for (let i = 0; i < parts.length; i++) {
    const node = (await repository.loadTree(current, options)).nodes.find((n) => n.name === parts[i]);
    if (!node) return null;
    if (i === parts.length - 1) return node;
    if (node.type !== 'dir') return null;
    current = node.subtree;
  }
  return null;
}
