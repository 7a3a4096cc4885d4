// The muc workload's bookkeeping (XEP-0045 rooms): the stanzas an occupant
// sends, the body each groupchat message carries (the room's sequence
// number and the send time), and what each occupant received of its room's
// messages, so that a message missing or received twice is counted.

export const NS_MUC = 'http://jabber.org/protocol/muc';
const NS_MUC_OWNER = `${NS_MUC}#owner`;

/**
 * Entering a room (XEP-0045 §7.2.1) without its history: the room may be
 * left from an earlier run, and only this run's messages are counted
 * (§7.2.15: maxstanzas='0' asks for none).
 */
export function joinPresence(roomJid: string, nick: string): string {
  return `<presence to='${roomJid}/${nick}'><x xmlns='${NS_MUC}'><history maxstanzas='0'/></x></presence>`;
}

/** §10.1.2: the owner accepts the default configuration of a new room (an instant room), which unlocks it. */
export function instantRoom(roomJid: string, id: string): string {
  return `<iq type='set' id='${id}' to='${roomJid}'><query xmlns='${NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'/></query></iq>`;
}

/** Status code 201 in a room's presence: the room was just created (§10.1.1). */
export const roomCreated = (raw: string): boolean => /<status\s+code=(['"])201\1/.test(raw);

/** A groupchat message's body: `lm <sequence number> <wall-clock send time, ms>`. */
export const mucBody = (seq: number, sentAt: string): string => `lm ${seq} ${sentAt}`;

/** The sequence number and send time of a body made by mucBody, or undefined for any other text. */
export function parseMucBody(body: string): { seq: number; sentAt: number } | undefined {
  if (!body.startsWith('lm ')) return undefined;
  const space = body.indexOf(' ', 3);
  if (space === -1) return undefined;
  const seq = Number(body.slice(3, space));
  const sentAt = Number(body.slice(space + 1));
  if (!Number.isSafeInteger(seq) || seq < 1 || !Number.isFinite(sentAt)) return undefined;
  return { seq, sentAt };
}

/** What one occupant received of its room's messages: each sequence number once (a bitset that grows with the room's count). */
export class Receipts {
  private bits = new Uint8Array(16);
  /** Distinct messages received. */
  received = 0;

  /** Records message `seq` (from 1): true the first time, false when it was already received. */
  mark(seq: number): boolean {
    const byte = seq >>> 3;
    if (byte >= this.bits.length) {
      let size = this.bits.length * 2;
      while (size <= byte) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.bits);
      this.bits = grown;
    }
    const bit = 1 << (seq & 7);
    if (this.bits[byte] & bit) return false;
    this.bits[byte] |= bit;
    this.received++;
    return true;
  }
}

/**
 * Deliveries that did not happen: every occupant in the room while it sent
 * should have received each message the room accepted (the `sent` less the
 * `bounced` ones, which came back as errors and are counted as such).
 */
export function lostDeliveries(sent: number, bounced: number, occupants: Receipts[]): number {
  const accepted = Math.max(0, sent - bounced);
  let lost = 0;
  for (const r of occupants) lost += Math.max(0, accepted - r.received);
  return lost;
}
