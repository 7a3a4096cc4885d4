// A room's messages in the message archive (XEP-0313 on the room's JID,
// XEP-0045 §7.2.15 history on entering): kept under the room's own JID as
// the archive's owner (it holds an '@', so no account's localpart is ever
// the same), each written before the room sends it to anyone, so that a
// message the room accepted outlives the node the room ran on. The
// archive's id is the message's XEP-0359 stanza id, by the room.
import { Element, parse as parseXml } from 'ltx';
import { type ArchiveStore, archiveId, stampOf } from '../mam/store.ts';
import { NS_CLIENT } from '../xmpp/ns.ts';

export class RoomArchive {
  private readonly store: ArchiveStore;
  private readonly service: string;

  constructor(store: ArchiveStore, service: string) {
    this.store = store;
    this.service = service;
  }

  /** The archive owner of a room. */
  key(room: string): string {
    return `${room}@${this.service}`;
  }

  /** Writes the message (from room/nick), durably; its id. */
  async keep(room: string, el: Element): Promise<string> {
    const id = archiveId();
    const from = el.attrs.from ?? '';
    const slash = from.indexOf('/');
    const body = el.getChild('body');
    const copy = new Element('message', { ...el.attrs, xmlns: NS_CLIENT });
    delete copy.attrs.to;
    for (const c of el.children) if (typeof c !== 'string') copy.cnode(c);
    await this.store.append([{ id, owner: this.key(room), stamp: stampOf(id), withBare: this.key(room), withResource: slash < 0 ? '' : from.slice(slash + 1), outgoing: false, body: body ? body.getText().slice(0, 64 * 1024) : '', xml: copy.toString() }]);
    return id;
  }

  /** The newest `max` messages (since `since`, ms), oldest first, each with its stamp. */
  async recent(room: string, max: number, since?: number): Promise<{ el: Element; stamp: number }[]> {
    const page = await this.store.query(this.key(room), { max, last: true, ...(since !== undefined ? { start: since } : {}) });
    return page.items.flatMap((m) => {
      try {
        const el = parseXml(m.xml) as Element;
        delete el.attrs.xmlns;
        return [{ el, stamp: m.stamp }];
      } catch {
        return [];
      }
    });
  }

  /** Every message of the room (it is destroyed). */
  removeAll(room: string): Promise<void> {
    return this.store.removeAll(this.key(room));
  }
}
