import type { BridgeState } from '../../../src/contract/index.js';

/**
 * Of the state shown and one that arrived, the one to show: the newer of one bridge run (a read's
 * answer can arrive after a newer state came down the event stream), and any of a new run (a
 * restarted bridge counts its revisions from 1 again).
 */
export function newerState(shown: BridgeState | null, arrived: BridgeState): BridgeState {
  return shown !== null && shown.startedAt === arrived.startedAt && shown.revision > arrived.revision ? shown : arrived;
}
