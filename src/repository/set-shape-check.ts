import { messageOf } from '../util/index.ts';
import type { CheckProblem } from './check.ts';
import { TreeMeasure, boundsProblem, shapeOf, sharedTrees, type TreeShape } from './tree-bounds.ts';
import type { Tree } from './tree.ts';

/** Shared trees named by one check, most-used first; and the sets named for each. */
const SHARED_NAMED = 20;
const SETS_NAMED = 5;

/** What check keeps of every tree it walked: enough to measure each set in memory. */
export class SetShapes {
  private readonly shapes = new Map<string, TreeShape>();

  add(id: string, tree: Tree): void {
    this.shapes.set(id, shapeOf(tree));
  }

  /**
   * Per set: beyond the bounds a restore keeps (entries per path, levels: see tree-bounds.ts) is
   * damage, `oversized-set`; a tree reached by more than one path within a set is information,
   * `shared-tree` (equal directories, such as empty ones, are one tree; a crafted set multiplies them).
   */
  async problems(sets: readonly { setId: string; tree: string }[]): Promise<CheckProblem[]> {
    const problems: CheckProblem[] = [];
    const measure = new TreeMeasure((id) => this.shapes.get(id) ?? null);
    const shared = new Map<string, { setId: string; paths: number }[]>();
    for (const set of sets) {
      try {
        const problem = boundsProblem(`set ${set.setId}`, await measure.size(set.tree));
        if (problem !== null) problems.push({ kind: 'oversized-set', object: set.tree, message: problem });
      } catch (error) {
        problems.push({ kind: 'oversized-set', object: set.tree, message: `set ${set.setId}: ${messageOf(error)}` });
      }
      for (const { id, paths } of sharedTrees(set.tree, (id) => this.shapes.get(id)?.subtrees)) {
        const list = shared.get(id) ?? [];
        list.push({ setId: set.setId, paths });
        shared.set(id, list);
      }
    }
    const most = (list: { paths: number }[]) => Math.max(...list.map((s) => s.paths));
    const byUse = [...shared].sort((a, b) => most(b[1]) - most(a[1]) || (a[0] < b[0] ? -1 : 1));
    for (const [id, list] of byUse.slice(0, SHARED_NAMED)) {
      const named = list
        .slice(0, SETS_NAMED)
        .map((s) => `${count(s.paths)} paths in set ${s.setId}`)
        .join(', ');
      const more = list.length > SETS_NAMED ? ` and in ${list.length - SETS_NAMED} more sets` : '';
      problems.push({
        kind: 'shared-tree',
        object: id,
        message: `tree ${id} is reached by more than one path: ${named}${more} (information: equal directories share one tree)`,
      });
    }
    if (byUse.length > SHARED_NAMED) {
      problems.push({
        kind: 'shared-tree',
        object: `${byUse.length - SHARED_NAMED} more`,
        message: `${byUse.length - SHARED_NAMED} more trees are reached by more than one path (information)`,
      });
    }
    return problems;
  }
}

function count(paths: number): string {
  return paths > 100_000_000 ? 'more than 100,000,000' : paths.toLocaleString('en');
}
