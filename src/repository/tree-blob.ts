import { QuiesceError } from '../model/index.ts';
import { isPlainTree, TREE_KEY_ORDER } from './plain-shape-guards.ts';
import { TreeSchema, type Tree } from './tree.ts';

/** A tree blob's plaintext as a validated Tree; anything else is `damaged`. */
export function parseTree(id: string, bytes: Buffer): Tree {
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch (error) {
    throw new QuiesceError('damaged', `tree ${id} is damaged: it is not JSON`, { cause: error });
  }
  if (isPlainTree(raw)) return raw;
  const parsed = TreeSchema.safeParse(raw);
  if (!parsed.success)
    throw new QuiesceError(
      'damaged',
      `tree ${id} is not a valid tree: ${parsed.error.issues[0]?.message ?? 'invalid'}`,
    );
  return parsed.data;
}

/** The canonical bytes of a tree: validated, keys in schema order, so equal trees deduplicate. */
export function serializeTree(tree: Tree): Buffer {
  if (isPlainTree(tree)) return Buffer.from(JSON.stringify(tree, TREE_KEY_ORDER as string[]), 'utf8');
  return Buffer.from(JSON.stringify(TreeSchema.parse(tree)), 'utf8');
}
