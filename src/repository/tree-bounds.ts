import { QuiesceError } from '../model/index.ts';
import type { Tree } from './tree.ts';

/**
 * The most entries (files, directories, symlinks, counted per path) one set's tree may expand
 * to. Trees are named by their content, so a directory may use one subtree many times (equal
 * empty directories do): a crafted set of 41 trees, each using the next twice, names 2^40
 * paths. 100 million is far beyond any real set (a large file server holds some millions) and
 * still a number a restore gets through.
 */
export const MAX_SET_ENTRIES = 100_000_000;

/**
 * The most levels of directories a set's tree may have. A path has at most 4,095 bytes on Linux
 * (PATH_MAX) and every level takes at least two of them (`/x`), so no backup makes more than
 * 2,047 levels and no restore can create them: 4,096 leaves room and still stops a crafted chain.
 */
export const MAX_TREE_DEPTH = 4096;

/** What measuring needs of a tree: its number of entries and the subtrees its directories use. */
export interface TreeShape {
  entries: number;
  subtrees: readonly string[];
}

export function shapeOf(tree: Tree): TreeShape {
  const subtrees: string[] = [];
  for (const node of tree.nodes) if (node.type === 'dir') subtrees.push(node.subtree);
  return { entries: tree.nodes.length, subtrees };
}

/** A tree's size as restore would expand it: every entry below it, per path, and its levels of trees (itself included). */
export interface TreeSize {
  /** Saturates at MAX_SET_ENTRIES + 1. */
  entries: number;
  /** Saturates at MAX_TREE_DEPTH + 1. */
  depth: number;
}

/** Is a size within the bounds? */
export function withinBounds(size: TreeSize): boolean {
  return size.entries <= MAX_SET_ENTRIES && size.depth <= MAX_TREE_DEPTH;
}

/** What a size beyond the bounds means, for an error or a report. */
export function boundsProblem(what: string, size: TreeSize): string | null {
  if (size.entries > MAX_SET_ENTRIES)
    return `${what} expands to more than ${MAX_SET_ENTRIES.toLocaleString('en')} entries (its directories use the same subtrees again and again: a crafted or damaged set)`;
  if (size.depth > MAX_TREE_DEPTH)
    return `${what} has more than ${MAX_TREE_DEPTH.toLocaleString('en')} levels of directories, more than any path can hold (a crafted or damaged set)`;
  return null;
}

/**
 * `TreeSize`s of trees, each tree measured once however often it is used: a directory's size is
 * its entries plus its subtrees' sizes, so a set that expands to 2^40 paths is measured in as
 * many steps as it has trees. The walk keeps its own stack (a chain of 10,000 levels needs no
 * deep recursion). `load` answers null for a tree that cannot be read: it counts as empty (its
 * restore fails on its own).
 */
export class TreeMeasure {
  private readonly sizes = new Map<string, TreeSize>();

  constructor(private readonly load: (id: string) => Promise<TreeShape | null> | TreeShape | null) {}

  async size(root: string): Promise<TreeSize> {
    const known = this.sizes.get(root);
    if (known !== undefined) return known;
    const stack: { id: string; shape: TreeShape; next: number; entries: number; depth: number }[] = [];
    const onStack = new Set<string>();
    const enter = async (id: string) => {
      const shape = (await this.load(id)) ?? { entries: 0, subtrees: [] };
      stack.push({ id, shape, next: 0, entries: shape.entries, depth: 1 });
      onStack.add(id);
    };
    await enter(root);
    for (;;) {
      const top = stack.at(-1)!;
      if (top.next < top.shape.subtrees.length) {
        const child = top.shape.subtrees[top.next++]!;
        const size = this.sizes.get(child);
        if (size !== undefined) add(top, size);
        else if (onStack.has(child)) throw new QuiesceError('damaged', `tree ${child} contains itself`);
        else await enter(child);
        continue;
      }
      stack.pop();
      onStack.delete(top.id);
      const size = {
        entries: Math.min(top.entries, MAX_SET_ENTRIES + 1),
        depth: Math.min(top.depth, MAX_TREE_DEPTH + 1),
      };
      this.sizes.set(top.id, size);
      const parent = stack.at(-1);
      if (parent === undefined) return size;
      add(parent, size);
    }
  }
}

function add(into: { entries: number; depth: number }, size: TreeSize): void {
  into.entries = Math.min(into.entries + size.entries, MAX_SET_ENTRIES + 1);
  into.depth = Math.max(into.depth, size.depth + 1);
}

/**
 * The trees reachable from `root` by more than one path, with how many (saturating at
 * MAX_SET_ENTRIES + 1), most-used first. Real sets have some (equal directories, such as empty
 * ones, are one tree); a crafted set multiplies them. `subtreesOf` answers undefined for a tree
 * that did not load. Works in memory: every tree is visited once.
 */
export function sharedTrees(
  root: string,
  subtreesOf: (id: string) => readonly string[] | undefined,
): { id: string; paths: number }[] {
  // Depth first, post-order: a tree comes after every tree below it.
  const order: string[] = [];
  const seen = new Set<string>([root]);
  const stack: { id: string; next: number }[] = [{ id: root, next: 0 }];
  while (stack.length > 0) {
    const top = stack.at(-1)!;
    const children = subtreesOf(top.id) ?? [];
    if (top.next < children.length) {
      const child = children[top.next++]!;
      if (!seen.has(child)) {
        seen.add(child);
        stack.push({ id: child, next: 0 });
      }
      continue;
    }
    stack.pop();
    order.push(top.id);
  }
  // Paths to a tree: the sum over the directories using it, parents before children.
  const paths = new Map<string, number>([[root, 1]]);
  for (let i = order.length - 1; i >= 0; i--) {
    const id = order[i]!;
    const own = paths.get(id) ?? 0;
    for (const child of subtreesOf(id) ?? [])
      paths.set(child, Math.min((paths.get(child) ?? 0) + own, MAX_SET_ENTRIES + 1));
  }
  return [...paths]
    .filter(([, n]) => n > 1)
    .map(([id, n]) => ({ id, paths: n }))
    .sort((a, b) => b.paths - a.paths || (a.id < b.id ? -1 : 1));
}
