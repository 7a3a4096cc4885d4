// RFC 3921 §3 session establishment, kept for old clients: RFC 6121
// Appendix E lets servers offer it as optional and answer it with a result.
import { NS_SESSION } from '../xmpp/ns.ts';
import type { ServerModule } from './module.ts';

export const sessionLegacy: ServerModule = {
  features: [],
  server: { [`set ${NS_SESSION}`]: () => null },
  account: { [`set ${NS_SESSION}`]: () => null },
};
