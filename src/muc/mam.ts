// XEP-0313 on a room's JID (§3.3.2, §6.1.2): the room's archive queried
// as an account's is (mam/query.ts: the form, with, start, end, ids,
// before-id, after-id, RSM paging, count, flip-page, full text, metadata),
// by whoever may enter the room, joined or not; the results come from the
// room's JID to the asker's full JID, each message from the occupant JID
// that sent it, its real JID only to those who may see it. Registered on
// Room's handler tables; the archive itself is muc/history.ts.
import type { Element } from 'ltx';
import { StanzaError } from '../xmpp/errors.ts';
import type { Jid } from '../xmpp/jid.ts';
import { NS_MAM, answerQuery, metadata, queryForm } from '../mam/query.ts';
import { present } from './history.ts';
import { Room, errorTo } from './room.ts';
import { log } from '../log.ts';

const isEl = (c: Element | string): c is Element => typeof c !== 'string';
const bareOf = (j: Jid): string => (j.local ? `${j.local}@${j.domain}` : j.domain);
const fullOf = (j: Jid): string => (j.resource ? `${bareOf(j)}/${j.resource}` : bareOf(j));
const rank = Room.rank;

/**
 * Who may read the room's archive, and whether the real JIDs of its
 * senders are shown to them. XEP-0313 §6.1.2: those who have the right to
 * enter the room at the time of the query, whether they are in it or not:
 * not outcasts; in a members-only room, members, admins and owners. A
 * password-protected room asks its password on entering, which a query
 * cannot carry: there, admins and owners, and those in the room (they
 * gave it). §8.1: anyone else gets forbidden.
 */
function reader(room: Room, from: Jid): { seesJids: boolean } {
  const bare = bareOf(from);
  const aff = room.affiliationOf(bare);
  // XEP-0045 (Locked Room): a room being created is not there for anyone but its owner.
  if (room.locked && aff !== 'owner') throw new StanzaError('item-not-found', 'the room is being created');
  // §7: a room that does not archive has no archive to query (nor advertises one).
  if (!room.config.archive) throw new StanzaError('service-unavailable', 'this room keeps no archive');
  if (aff === 'outcast') throw new StanzaError('forbidden', 'you are banned from this room');
  if (room.config.membersOnly && rank[aff] < rank.member) throw new StanzaError('forbidden', "only the room's members may read its archive");
  const occupants = room.occupantsOf(bare);
  if (room.config.password !== '' && rank[aff] < rank.admin && occupants.length === 0) throw new StanzaError('forbidden', 'enter the room (with its password) to read its archive');
  // XEP-0045 (Non-Anonymous, Semi-Anonymous Rooms): real JIDs to everyone in a non-anonymous room, else to moderators (and to admins and owners, who enter as moderators).
  return { seesJids: room.config.whois === 'anyone' || rank[aff] >= rank.admin || occupants.some((o) => o.role === 'moderator') };
}

async function mamGet(room: Room, iq: Element, from: Jid): Promise<Element> {
  reader(room, from);
  const payload = iq.children.find(isEl)!;
  if (payload.name === 'query') return queryForm(room.d.archive.access(room.name).fulltext);
  if (payload.name === 'metadata') return metadata(room.d.archive.access(room.name));
  throw new StanzaError('feature-not-implemented', `<${payload.name}/> is not supported on a room's archive`);
}

/** Queries of one room running at once at most; more wait (resource-constraint, wait). */
const MAX_RUNNING = 4;
const running = new WeakMap<Room, number>();

/**
 * A query: who asks is checked in the room's turn (against its
 * affiliations and occupants as they are), then the archive is read off it,
 * so that a long query (full text over a large archive) holds up no
 * message of the room; the room answers when it is done.
 */
async function mamSet(room: Room, iq: Element, from: Jid): Promise<undefined> {
  const { seesJids } = reader(room, from);
  const payload = iq.children.find(isEl)!;
  if (payload.name !== 'query') throw new StanzaError('feature-not-implemented', `<${payload.name}/> is not supported on a room's archive`);
  const now = running.get(room) ?? 0;
  if (now >= MAX_RUNNING) throw new StanzaError('resource-constraint', 'this room is answering other queries; try again shortly', 'wait');
  running.set(room, now + 1);
  void (async () => {
    try {
      const fin = await answerQuery(payload, room.d.archive.access(room.name), {
        from: room.jid,
        to: fullOf(from),
        // Each result on its way before the next, and all before the answer (XEP-0313 §4.2: the results, then the iq result).
        send: (msg) => room.d.send(msg),
        present: (archived) => present(archived, seesJids),
      });
      room.result(iq, fin);
    } catch (err) {
      if (!(err instanceof StanzaError)) log.warn('MUC: a query of the room archive failed', { room: room.jid, err: String(err) });
      room.d.send(errorTo(iq, err instanceof StanzaError ? err : new StanzaError('internal-server-error', 'the archive cannot be read now; try again shortly', 'wait')));
    } finally {
      const left = (running.get(room) ?? 1) - 1;
      if (left > 0) running.set(room, left);
      else running.delete(room);
    }
  })();
  return undefined;
}

Room.iqHandlers[`get ${NS_MAM}`] = mamGet;
Room.iqHandlers[`set ${NS_MAM}`] = mamSet;
