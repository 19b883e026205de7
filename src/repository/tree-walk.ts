import type { Tree } from './tree.ts';

export type TreeLoader = (id: string) => Promise<Tree>;

/**
 * Visits every tree reachable from `roots` once, depth first. `visit` sees each tree that loads;
 * `onError` each that does not (it may throw to stop the walk).
 */
export async function visitTrees(
  roots: Iterable<string>,
  load: TreeLoader,
  visit: (id: string, tree: Tree) => void,
  onError: (id: string, error: unknown) => void,
): Promise<Set<string>> {
  const seen = new Set<string>();
  const stack = [...roots];
  while (stack.length > 0) {
    const id = stack.pop()!;
    if (seen.has(id)) continue;
    seen.add(id);
    let tree: Tree;
    try {
      tree = await load(id);
    } catch (error) {
      onError(id, error);
      continue;
    }
    visit(id, tree);
    for (const node of tree.nodes) if (node.type === 'dir') stack.push(node.subtree);
  }
  return seen;
}

/**
 * The files that use any of the `bad` blobs, as `<setId>:/path/in/set`, at most `limit` per blob.
 * Each tree is loaded once: a subtree's hits are remembered and prefixed for every place it is used.
 */
export async function filesUsing(
  sets: { setId: string; tree: string }[],
  bad: ReadonlySet<string>,
  load: TreeLoader,
  limit = 1000,
): Promise<Map<string, string[]>> {
  const memo = new Map<string, { path: string; blob: string }[]>();
  const hitsOf = async (id: string): Promise<{ path: string; blob: string }[]> => {
    const known = memo.get(id);
    if (known !== undefined) return known;
    memo.set(id, []); // a cycle (only in a forged repository) ends here
    let tree: Tree;
    try {
      tree = await load(id);
    } catch {
      return [];
    }
    const hits: { path: string; blob: string }[] = [];
    for (const node of tree.nodes) {
      if (node.type === 'file') {
        const used = new Set(node.content.map((c) => c.id).filter((b) => bad.has(b)));
        for (const blob of used) hits.push({ path: `/${node.name}`, blob });
      } else if (node.type === 'dir') {
        for (const hit of await hitsOf(node.subtree)) hits.push({ path: `/${node.name}${hit.path}`, blob: hit.blob });
      }
      // Enough to name `limit` files for every bad blob: a blob shared by millions of files stays bounded.
      if (hits.length >= limit * bad.size) {
        hits.length = limit * bad.size;
        break;
      }
    }
    memo.set(id, hits);
    return hits;
  };
  const files = new Map<string, string[]>();
  for (const set of sets) {
    for (const hit of await hitsOf(set.tree)) {
      const list = files.get(hit.blob) ?? [];
      if (list.length < limit) list.push(`${set.setId}:${hit.path}`);
      files.set(hit.blob, list);
    }
  }
  return files;
}
