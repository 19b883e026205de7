/**
 * How deep a YAML text nests, measured on its CST (the yaml package's parser keeps its own stack,
 * so this never recurses). The composer that turns the CST into a document recurses once per
 * level: past a few thousand levels it overflows the stack, and after a few such overflows V8
 * may abort the whole process. A config file never nests more than a handful of levels, so one
 * that nests deeper than `MAX_YAML_DEPTH` is refused before it is composed.
 */
import { Parser, type CST } from 'yaml';

/** Levels of lists and maps a config file may nest (it needs about five). */
export const MAX_YAML_DEPTH = 64;

/** The tokens one CST token holds: a document's value, a collection's keys and values. */
function children(token: CST.Token): CST.Token[] {
  switch (token.type) {
    case 'document':
      return token.value === undefined ? [] : [token.value];
    case 'block-map':
    case 'block-seq':
    case 'flow-collection': {
      const out: CST.Token[] = [];
      for (const item of token.items as CST.CollectionItem[]) {
        if (item.key) out.push(item.key);
        if (item.value) out.push(item.value);
      }
      return out;
    }
    default:
      return [];
  }
}

const isCollection = (token: CST.Token): boolean =>
  token.type === 'block-map' || token.type === 'block-seq' || token.type === 'flow-collection';

/** The offset of the first collection nested deeper than `max` levels, or undefined when there is none. */
export function tooDeepAt(text: string, max = MAX_YAML_DEPTH): number | undefined {
  const pending: { token: CST.Token; depth: number }[] = [];
  for (const token of new Parser().parse(text)) pending.push({ token, depth: 0 });
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const depth = next.depth + (isCollection(next.token) ? 1 : 0);
    if (depth > max) return next.token.offset;
    for (const child of children(next.token)) pending.push({ token: child, depth });
  }
  return undefined;
}
