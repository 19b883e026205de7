import { QuiesceError, type CallOptions } from '../model/index.ts';
import { MAX_SET_ENTRIES, TreeMeasure, shapeOf, type RestorerRepository } from '../repository/index.ts';

/**
 * Keeps a restore within MAX_SET_ENTRIES entries, however its trees share subtrees: each tree it
 * is about to restore is measured first (every tree read once, see `TreeMeasure`), so a crafted
 * set naming 2^40 paths is refused before anything is written, in as many reads as it has trees.
 * Depth needs no measuring here: a path holds at most PATH_MAX bytes (see restore-errors.ts).
 */
export class RestoreBounds {
  private readonly measure: TreeMeasure;
  private admitted = 0;

  constructor(repository: Pick<RestorerRepository, 'loadTree'>, options: CallOptions) {
    // A tree that does not load counts as empty here: restoring it fails on its own, named.
    this.measure = new TreeMeasure((id) => repository.loadTree(id, options).then(shapeOf, () => null));
  }

  /** Counts what restoring `tree` (all of it) adds; throws `damaged` when the restore would pass the bound. */
  async admit(tree: string, what: string): Promise<void> {
    const { entries } = await this.measure.size(tree);
    this.admitted += entries;
    if (this.admitted > MAX_SET_ENTRIES) {
      throw new QuiesceError(
        'damaged',
        `${what} expands to more than ${MAX_SET_ENTRIES.toLocaleString('en')} entries: its directories use the same ` +
          `subtrees again and again (a crafted or damaged set; quiesce check names them); refusing to restore it`,
      );
    }
  }
}
