// XEP-0363 HTTP File Upload: a service on a domain of the server's own
// (upload.<domain> unless XMPP_UPLOAD_DOMAIN says otherwise), listed in the
// server's disco#items. The server's users ask it for a slot, a PUT and a
// GET URL on the server's HTTPS listener (upload/http.ts serves them); the
// slot is kept in the upload store, so any worker of any node answers the
// request and any serves the URLs.
import { Element } from 'ltx';
import { statfs } from 'node:fs/promises';
import type { ServerModule, ServiceIqHandler } from './module.ts';
import type { MediaPattern } from '../config/index.ts';
import type { UploadStore } from '../upload/store.ts';
import { StanzaError } from '../xmpp/errors.ts';
import { NS_DATA } from './pep.ts';
import { NS_DISCO_INFO, NS_DISCO_ITEMS } from '../xmpp/ns.ts';
import { SLOT_WINDOW_MS, UPLOAD_PATH, UPLOAD_WRITE_MS, newToken } from '../upload/http.ts';
import { parseMediaType, typeAllowed, validFilename } from '../upload/media.ts';
import { ANON_PREFIX } from '../accounts/store.ts';
import { log } from '../log.ts';

export const NS_UPLOAD = 'urn:xmpp:http:upload:0';
/** Files and open slots one account may hold at once, whatever their size. */
export const MAX_FILES_PER_ACCOUNT = 10_000;
/** Room kept free on the upload directory's file system: a slot that would leave less is refused. */
const DISK_RESERVE_BYTES = 256 * 1024 * 1024;

export interface UploadServiceOptions {
  /** The service's domain (XMPP_UPLOAD_DOMAIN). */
  domain: string;
  /** The server's domain: its users get slots. */
  serverDomain: string;
  store: UploadStore;
  /** XMPP_UPLOAD_DIR, whose file system must have room. */
  dir: string;
  maxBytes: number;
  quotaBytes: number;
  types: readonly MediaPattern[];
  expireMs: number;
  /** Where the HTTPS listener is reached ('https://host:port[/path]'), once known. */
  baseUrl: () => string | undefined;
  now?: () => number;
}

/** XEP-0363 §5: the file is larger than the service takes, with the largest it does. */
class FileTooLarge extends StanzaError {
  private readonly max: number;
  constructor(max: number) {
    super('not-acceptable', `File too large. The maximum file size is ${max} bytes`, 'modify');
    this.max = max;
  }
  override toElement(by?: string): Element {
    const el = super.toElement(by);
    el.c('file-too-large', { xmlns: NS_UPLOAD }).c('max-file-size').t(String(this.max));
    return el;
  }
}

/** XEP-0363 §5: a temporary refusal (a quota), with when to try again if that is known. */
class TryLater extends StanzaError {
  private readonly at: number;
  constructor(text: string, at: number) {
    super('resource-constraint', text, 'wait');
    this.at = at;
  }
  override toElement(by?: string): Element {
    const el = super.toElement(by);
    // §5: the stamp MUST be a XEP-0082 date-time in UTC.
    if (this.at > 0) el.c('retry', { xmlns: NS_UPLOAD, stamp: new Date(Math.ceil(this.at / 1000) * 1000).toISOString().replace('.000Z', 'Z') });
    return el;
  }
}

export function uploadService(o: UploadServiceOptions): ServerModule {
  const now = o.now ?? Date.now;

  const discoInfo: ServiceIqHandler = (iq) => {
    if (iq.getChild('query', NS_DISCO_INFO)!.attrs.node !== undefined) throw new StanzaError('item-not-found');
    const q = new Element('query', { xmlns: NS_DISCO_INFO });
    q.c('identity', { category: 'store', type: 'file', name: 'HTTP File Upload' });
    for (const f of [NS_DISCO_INFO, NS_DISCO_ITEMS, NS_UPLOAD]) q.c('feature', { var: f });
    // §3: the largest file, as XEP-0128 extended information; the field MUST be max-file-size, in bytes.
    const x = q.c('x', { xmlns: NS_DATA, type: 'result' });
    x.c('field', { var: 'FORM_TYPE', type: 'hidden' }).c('value').t(NS_UPLOAD);
    x.c('field', { var: 'max-file-size' }).c('value').t(String(o.maxBytes));
    return q;
  };
  const discoItems: ServiceIqHandler = (iq) => {
    if (iq.getChild('query', NS_DISCO_ITEMS)!.attrs.node !== undefined) throw new StanzaError('item-not-found');
    return new Element('query', { xmlns: NS_DISCO_ITEMS });
  };

  const request: ServiceIqHandler = async (iq, from) => {
    // Slots are for the server's own users (§5: not-allowed for others).
    if (!from.local || from.domain !== o.serverDomain) throw new StanzaError('not-allowed', `only users of ${o.serverDomain} may upload here`, 'cancel');
    // An anonymous session (XEP-0175) is a new identity at each login: a
    // quota of its own each time would bound nothing (§5: not-allowed).
    if (from.local.startsWith(ANON_PREFIX)) throw new StanzaError('not-allowed', 'anonymous sessions may not upload', 'cancel');
    const r = iq.getChild('request', NS_UPLOAD);
    if (!r) throw new StanzaError('bad-request', 'a <request/> is expected');
    // §4: the request MUST carry the file's name and size; its type is OPTIONAL.
    const { filename, size: rawSize } = r.attrs as Record<string, string | undefined>;
    if (!validFilename(filename)) throw new StanzaError('bad-request', `a file name of 1 to 255 bytes, without '/', '\\' or control characters, is required`);
    if (rawSize === undefined || !/^\d{1,15}$/.test(rawSize)) throw new StanzaError('bad-request', 'the size, in bytes, is required');
    const size = Number(rawSize);
    if (size > o.maxBytes) throw new FileTooLarge(o.maxBytes);
    let type = '';
    const rawType = r.attrs['content-type'] as string | undefined;
    if (rawType !== undefined && rawType !== '') {
      const t = parseMediaType(rawType);
      if (!t) throw new StanzaError('bad-request', `${rawType} is not a media type`);
      if (!typeAllowed(o.types, t)) throw new StanzaError('not-acceptable', `${t.essence} files are not accepted here`, 'modify');
      type = t.full;
    }
    const base = o.baseUrl();
    if (base === undefined) throw new StanzaError('service-unavailable', 'the HTTP listener is not up yet', 'wait');
    const t = now();
    const free = await statfs(o.dir).then((s) => s.bavail * s.bsize, (err: unknown) => {
      log.error('the upload directory cannot be read', { dir: o.dir, err: String(err) });
      return -1;
    });
    // Slots handed out and not yet written will take their room too: what is free is free of them.
    const promised = free < 0 ? 0 : await o.store.openBytes({ now: t, writeMs: UPLOAD_WRITE_MS, expireMs: o.expireMs });
    if (free - promised - size < DISK_RESERVE_BYTES) throw new StanzaError('resource-constraint', 'the server has no room for this file now', 'wait');
    const token = newToken();
    try {
      await o.store.reserve(
        { token, owner: from.local, filename, size, type, created: t, putUntil: t + SLOT_WINDOW_MS },
        { quotaBytes: o.quotaBytes, maxFiles: MAX_FILES_PER_ACCOUNT },
        { now: t, writeMs: UPLOAD_WRITE_MS, expireMs: o.expireMs },
      );
    } catch (err) {
      if ((err as Error).name === 'UploadQuotaError') throw new TryLater(`Quota reached: ${(err as Error).message}`, (err as { retryAt: number }).retryAt);
      throw err;
    }
    // §4: HTTPS URLs (RFC 3986, non-ASCII percent-encoded) that keep the file's name and ending; PUT and GET the same here.
    const url = `${base}${UPLOAD_PATH}${token}/${encodeURIComponent(filename)}`;
    const slot = new Element('slot', { xmlns: NS_UPLOAD });
    slot.c('put', { url });
    slot.c('get', { url });
    return slot;
  };

  return {
    features: [],
    service: {
      domain: o.domain,
      iq: {
        [`get ${NS_DISCO_INFO}`]: discoInfo,
        [`get ${NS_DISCO_ITEMS}`]: discoItems,
        [`get ${NS_UPLOAD}`]: request,
      },
    },
  };
}
