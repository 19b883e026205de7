/**
 * Where things are in the YAML document: the offset a field's path points at, the key that
 * sits at an offset, and the keys that are lists or maps (which a JavaScript object cannot hold).
 */
import { isAlias, isMap, isPair, isScalar, isSeq, type Document, type Node, type Pair } from 'yaml';

export type Path = readonly (string | number)[];

export function isNode(value: unknown): value is Node {
  return isScalar(value) || isMap(value) || isSeq(value) || isAlias(value);
}

function keyString(key: unknown): string | undefined {
  if (isScalar(key)) return String(key.value);
  return undefined;
}

/**
 * The offset a path points at: the value's node, or its key when `atKey` (unknown keys), or
 * else the deepest node that exists on the way (the parent map for a missing key).
 */
export function locate(doc: Document, path: Path, atKey: boolean): number | undefined {
  let node: unknown = doc.contents;
  let offset = isNode(node) ? node.range?.[0] : undefined;
  for (let i = 0; i < path.length; i++) {
    if (isAlias(node)) node = node.resolve(doc);
    const segment = path[i]!;
    if (isMap(node)) {
      const pair = node.items.findLast((item) => keyString(item.key) === String(segment));
      if (pair === undefined) break;
      const key: unknown = pair.key;
      if ((atKey && i === path.length - 1) || !isNode(pair.value)) {
        return isNode(key) && key.range ? key.range[0] : offset;
      }
      node = pair.value;
    } else if (isSeq(node)) {
      const item: unknown = node.items[Number(segment)];
      if (!isNode(item)) break;
      node = item;
    } else {
      break;
    }
    if (isNode(node) && node.range) offset = node.range[0];
  }
  return offset;
}

export interface FoundKey {
  path: (string | number)[];
  /** The earlier pair with the same key in the same map, if any. */
  first: Pair | undefined;
}

/** The path of the map key that starts at `offset` (for YAML's duplicate-key errors). */
export function keyAt(doc: Document, offset: number): FoundKey | undefined {
  const visit = (node: unknown, path: (string | number)[]): FoundKey | undefined => {
    if (isMap(node)) {
      for (const [index, pair] of node.items.entries()) {
        const key: unknown = pair.key;
        const name = keyString(key);
        if (isNode(key) && key.range?.[0] === offset && name !== undefined) {
          return {
            path: [...path, name],
            first: node.items.slice(0, index).find((other) => keyString(other.key) === name),
          };
        }
        const found = name === undefined ? undefined : visit(pair.value, [...path, name]);
        if (found) return found;
      }
    } else if (isSeq(node)) {
      for (const [index, item] of node.items.entries()) {
        const found = visit(item, [...path, index]);
        if (found) return found;
      }
    }
    return undefined;
  };
  return visit(doc.contents, []);
}

/** Keys that are lists or maps (`? [a, b]: x`): JavaScript objects cannot hold them. */
export function collectionKeys(doc: Document): { key: Node; path: (string | number)[] }[] {
  const out: { key: Node; path: (string | number)[] }[] = [];
  const visit = (node: unknown, path: (string | number)[]): void => {
    if (isMap(node)) {
      for (const pair of node.items) {
        const key: unknown = pair.key;
        if (isMap(key) || isSeq(key)) out.push({ key, path });
        else visit(pair.value, [...path, keyString(key) ?? '']);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, index) => visit(item, [...path, index]));
    } else if (isPair(node)) {
      visit(node.value, path);
    }
  };
  visit(doc.contents, []);
  return out;
}
