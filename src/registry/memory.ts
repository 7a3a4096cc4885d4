// The registry of a single node, held by the main thread. It is synchronous:
// one thread owns it, so every bind is atomic without locks. Workers keep a
// read replica (HubRegistry) fed by the changes it reports.
import { randomResource } from './registry.ts';
import type { BindOutcome, BindRequest, SessionRecord } from './registry.ts';

export class MemoryRegistry {
  private readonly byJid = new Map<string, SessionRecord>();
  private readonly byBare = new Map<string, Map<string, SessionRecord>>();

  bind(req: BindRequest): BindOutcome {
    let rec = req.rec;
    const siblings = this.byBare.get(rec.bare);
    if (req.exclusiveBare && siblings && siblings.size > 0) return { ok: false, condition: 'conflict' };
    const existing = this.byJid.get(rec.jid);
    if (existing) {
      if (req.policy === 'old-wins') return { ok: false, condition: 'conflict' };
      if (req.policy === 'assign') {
        // XEP-0175 scenario 2: the server overrules the requested resource.
        do rec = { ...rec, jid: `${rec.bare}/${randomResource()}` };
        while (this.byJid.has(rec.jid));
      }
    }
    const replacing = existing && req.policy === 'new-wins' ? existing : undefined;
    const count = (siblings?.size ?? 0) - (replacing ? 1 : 0);
    if (count >= req.maxResources) return { ok: false, condition: 'resource-constraint' };
    if (replacing) this.remove(replacing.jid, replacing.sid);
    this.put(rec);
    return replacing ? { ok: true, rec, replaced: replacing } : { ok: true, rec };
  }

  put(rec: SessionRecord): void {
    this.byJid.set(rec.jid, rec);
    let m = this.byBare.get(rec.bare);
    if (!m) this.byBare.set(rec.bare, (m = new Map()));
    m.set(rec.jid, rec);
  }

  /** Removes the record only if it still belongs to that stream. */
  remove(jid: string, sid: string): SessionRecord | undefined {
    const rec = this.byJid.get(jid);
    if (!rec || rec.sid !== sid) return undefined;
    this.byJid.delete(jid);
    const m = this.byBare.get(rec.bare)!;
    m.delete(jid);
    if (m.size === 0) this.byBare.delete(rec.bare);
    return rec;
  }

  setPresence(jid: string, sid: string, available: boolean, priority: number): SessionRecord | undefined {
    const rec = this.byJid.get(jid);
    if (!rec || rec.sid !== sid) return undefined;
    const next = { ...rec, available, priority };
    this.put(next);
    return next;
  }

  /** The record of that stream, now at `worker` (of this node); undefined if it is not that stream's. */
  move(jid: string, sid: string, worker: number): SessionRecord | undefined {
    const rec = this.byJid.get(jid);
    if (!rec || rec.sid !== sid) return undefined;
    const next = { ...rec, worker };
    this.put(next);
    return next;
  }

  lookup(jid: string): SessionRecord | undefined {
    return this.byJid.get(jid);
  }

  resources(bare: string): SessionRecord[] {
    const m = this.byBare.get(bare);
    return m ? [...m.values()] : [];
  }

  /** Every record: what a worker joining the hub starts its replica from. */
  all(): IterableIterator<SessionRecord> {
    return this.byJid.values();
  }

  get size(): number {
    return this.byJid.size;
  }
}
