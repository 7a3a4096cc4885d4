// XEP-0199: XMPP Ping, answered for the server and for accounts (§4.2, §4.3).
import { NS_PING } from '../xmpp/ns.ts';
import type { ServerModule } from './module.ts';

export const ping: ServerModule = {
  features: [NS_PING],
  server: { [`get ${NS_PING}`]: () => null },
  account: { [`get ${NS_PING}`]: () => null },
  // Between servers too (XEP-0199 §4.3).
  remoteServer: { [`get ${NS_PING}`]: () => null },
  remoteAccount: { [`get ${NS_PING}`]: () => null },
};
