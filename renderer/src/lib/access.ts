import type { WhoAmI } from '../../../src/contract/index.js';

/**
 * Whether the dashboard offers controls that run control actions. A bridge that asks who you are
 * says per role (`can.actions`): a role that may not would only be answered 403. A bridge without
 * keys takes the control token for them (Connect asks for it), so its controls stay; so do they
 * while whoami has not answered yet.
 */
export function mayRunActions(whoami: WhoAmI | null): boolean {
  return whoami === null || !whoami.authRequired || whoami.can.actions;
}
