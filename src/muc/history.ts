// A room's messages in the message archive (XEP-0313 on the room's JID,
// XEP-0045 §7.2.15 history on entering): kept under the room's own JID as
// the archive's owner (it holds an '@', so no account's localpart is ever
// the same), each written before the room sends it to anyone, so that a
// message the room accepted outlives the node the room ran on. The
// archive's id is the message's XEP-0359 stanza id, by the room. Queries
// on the room's JID are muc/mam.ts.
import { Element, parse as parseXml } from 'ltx';
import { type ArchiveStore, archiveId, stampOf } from '../mam/store.ts';
import type { ArchiveAccess } from '../mam/query.ts';
import { NS_CLIENT } from '../xmpp/ns.ts';

const NS_MUC_USER = 'http://jabber.org/protocol/muc#user';

export class RoomArchive {
  private readonly store: ArchiveStore;
  private readonly service: string;
  private readonly fulltext: boolean;

  constructor(store: ArchiveStore, service: string, opts: { fulltext?: boolean } = {}) {
    this.store = store;
    this.service = service;
    this.fulltext = opts.fulltext ?? false;
  }

  /** The archive owner of a room. */
  key(room: string): string {
    return `${room}@${this.service}`;
  }

  /** The room's archive, as a MAM query reads it (nothing is buffered: each message is written before it is sent). */
  access(room: string): ArchiveAccess {
    return { store: this.store, owner: this.key(room), fulltext: this.fulltext };
  }

  /**
   * Writes the message (from room/nick, by the occupant whose real JID is
   * `jid`), durably; its id. The archived copy has no 'to' and carries
   * the sender's real JID in a muc#user <item/>, which `present` keeps for
   * those who may see it (XEP-0313 §6.1.2); any such <x/> the sender wrote
   * is not kept (XEP-0313 §8.4: it could claim anyone's JID).
   */
  async keep(room: string, el: Element, jid: string): Promise<string> {
    const id = archiveId();
    const from = el.attrs.from ?? '';
    const slash = from.indexOf('/');
    const body = el.getChild('body');
    const copy = new Element('message', { ...el.attrs, xmlns: NS_CLIENT });
    delete copy.attrs.to;
    for (const c of el.children) if (typeof c !== 'string' && !(c.name === 'x' && c.attrs.xmlns === NS_MUC_USER)) copy.cnode(c);
    copy.c('x', { xmlns: NS_MUC_USER }).c('item', { jid });
    await this.store.append([{ id, owner: this.key(room), stamp: stampOf(id), withBare: this.key(room), withResource: slash < 0 ? '' : from.slice(slash + 1), outgoing: false, body: body ? body.getText().slice(0, 64 * 1024) : '', xml: copy.toString() }]);
    return id;
  }

  /** The newest `max` messages (since `since`, ms), oldest first, each with its id and stamp. */
  async recent(room: string, max: number, since?: number): Promise<{ el: Element; id: string; stamp: number }[]> {
    const page = await this.store.query(this.key(room), { max, last: true, ...(since !== undefined ? { start: since } : {}) });
    return page.items.flatMap((m) => {
      try {
        const el = parseXml(m.xml) as Element;
        delete el.attrs.xmlns;
        return [{ el, id: m.id, stamp: m.stamp }];
      } catch {
        return [];
      }
    });
  }

  /** Every message of the room (it is destroyed, or a new room takes its name). */
  removeAll(room: string): Promise<void> {
    return this.store.removeAll(this.key(room));
  }
}

/** An archived message as one asker gets it: the sender's real JID only to who may see it (XEP-0313 §6.1.2). */
export function present(archived: Element, seesJids: boolean): Element {
  if (seesJids) return archived;
  const copy = new Element(archived.name, { ...archived.attrs });
  for (const c of archived.children) if (typeof c !== 'string' && !(c.name === 'x' && c.attrs.xmlns === NS_MUC_USER)) copy.cnode(c);
  return copy;
}
