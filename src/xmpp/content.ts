// Whether a message carries anything a user would miss (see offline/offline.ts
// for the rules it serves): routing drops a message without content, rather
// than bouncing it, where it cannot go (RFC 6121 §8.5.1, §8.5.2.2.1).
import type { Element } from 'ltx';
import { NS_CHATSTATES, NS_HINTS, NS_MARKERS, NS_RECEIPTS, NS_SID } from './ns.ts';

const isElement = (c: Element | string): c is Element => typeof c !== 'string';

/** A child carrying nothing a user would miss beside chat states: a thread id, a hint, an origin id. */
function incidental(c: Element): boolean {
  const ns = c.getNS();
  if (ns === undefined || ns === 'jabber:client') return c.getName() === 'thread';
  return ns === NS_HINTS || ns === NS_SID;
}

/** Payloads that only say something about the conversation's state, stale once late. */
const STATE_ONLY = new Set([NS_CHATSTATES, NS_RECEIPTS, NS_MARKERS]);

/** True when a message carries no content (see above): only chat states, receipts, markers, and incidentals. */
export function contentless(el: Element): boolean {
  if (el.getName() !== 'message') return false;
  return el.children.filter(isElement).every((c) => incidental(c) || STATE_ONLY.has(c.getNS() as string));
}

