// XEP-0092: Software Version of the server.
import { Element } from 'ltx';
import { NS_VERSION } from '../xmpp/ns.ts';
import type { ServerModule } from './module.ts';

export const SERVER_NAME = 'xmpp-server';
export const SERVER_VERSION = '0.1.0';

const answer = () => {
  const q = new Element('query', { xmlns: NS_VERSION });
  q.c('name').t(SERVER_NAME).up().c('version').t(SERVER_VERSION).up().c('os').t(`Node.js ${process.version}`);
  return q;
};

export const version: ServerModule = {
  features: [NS_VERSION],
  server: { [`get ${NS_VERSION}`]: answer },
  remoteServer: { [`get ${NS_VERSION}`]: answer },
};
