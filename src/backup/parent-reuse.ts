import { sameMicrosecond, type CallOptions, type KnownFile, type KnownFiles } from '../model/index.ts';
import type { FileNode, ArchiverRepository, Tree, TreeNode } from '../repository/index.ts';

/** Original paths under which a parent set's content may be trusted by size and mtime. */
export function isUnderAnyOf(paths: readonly string[]): (original: string) => boolean {
  return (original) => paths.some((p) => original === p || original.startsWith(p === '/' ? '/' : `${p}/`));
}

/**
 * Can a file's content be taken from its node in the parent set, unread? Only when the node is
 * a file of the same size and mtime (to the microsecond: a snapshot's copies keep no finer),
 * every blob of it is in the repository, and its mtime is older than `before` (the parent set's
 * start, less a second): a file written again within the same timestamp tick after the parent
 * read it would look unchanged, so a file the parent saw being written is always read again
 * (git's "racy" entries).
 */
export function canReuseParentContent(
  repository: ArchiverRepository,
  node: TreeNode | null | undefined,
  size: number | bigint,
  mtimeNs: string | bigint,
  before: bigint,
): node is FileNode {
  return (
    node?.type === 'file' &&
    node.size === Number(size) &&
    sameMicrosecond(node.mtimeNs, mtimeNs) &&
    BigInt(node.mtimeNs) < before &&
    node.content.every((c) => repository.hasBlob(c.id))
  );
}

/**
 * The files a parent set holds, for the providers (`ProviderSnapshotRequest.known`): a copy or
 * reflink snapshot of an incremental then copies only what changed. A directory's listing is its
 * tree in the parent set, loaded when first asked for.
 */
export function parentKnownFiles(
  repository: ArchiverRepository,
  parentTree: string,
  trusted: readonly string[],
  before: bigint,
): KnownFiles {
  const isTrusted = isUnderAnyOf(trusted);
  const trees = new Map<string, Promise<Tree | null>>();
  const treeAt = (dir: string, options: CallOptions): Promise<Tree | null> => {
    let tree = trees.get(dir);
    if (tree === undefined) {
      tree = (async () => {
        if (dir === '/') return repository.loadTree(parentTree, options);
        const slash = dir.lastIndexOf('/');
        const above = await treeAt(slash === 0 ? '/' : dir.slice(0, slash), options);
        const node = above?.nodes.find((n) => n.name === dir.slice(slash + 1));
        return node?.type === 'dir' ? repository.loadTree(node.subtree, options) : null;
      })();
      // A failed load is not cached: the caller fails, and a retry reads again.
      tree.catch(() => trees.delete(dir));
      // Bounded: a huge parent is not held whole; a directory's chain is simply read again.
      if (trees.size >= 1024) trees.clear();
      trees.set(dir, tree);
    }
    return tree;
  };
  return {
    async inDirectory(originalDir, options = {}) {
      const prefix = originalDir === '/' ? '/' : `${originalDir}/`;
      // Nothing trusted in or below this directory: no tree to load.
      if (!isTrusted(originalDir) && !trusted.some((p) => p.startsWith(prefix))) return null;
      const tree = await treeAt(originalDir, options);
      if (tree === null) return null;
      const files = new Map<string, KnownFile>();
      for (const node of tree.nodes) {
        if (node.type !== 'file' || !isTrusted(`${prefix}${node.name}`)) continue;
        if (!canReuseParentContent(repository, node, node.size, node.mtimeNs, before)) continue;
        files.set(node.name, { size: BigInt(node.size), mtimeNs: BigInt(node.mtimeNs) });
      }
      return files;
    },
  };
}
