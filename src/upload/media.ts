// What the upload service checks of a file's name and media type, and how
// a file is presented to a browser when it is got.
import type { MediaPattern } from '../config/index.ts';

/** The longest file name a slot may be for, in UTF-8 bytes (what most file systems allow). */
export const MAX_FILENAME_BYTES = 255;
/** The longest media type (parameters included) a slot may name. */
export const MAX_TYPE_LENGTH = 255;
/** What a file whose type nobody named is served as (XEP-0363 §6: the service MAY assume it). */
export const OCTET_STREAM = 'application/octet-stream';

/** RFC 9110 §5.6.2 token. */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** RFC 9110 §8.3.1: parameters after the type, each `; name=value` (a token, or a quoted string). */
const PARAMS = /^(?:[ \t]*;[ \t]*[!#$%&'*+.^_`|~0-9A-Za-z-]+=(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+|"(?:[\t \x21\x23-\x5B\x5D-\x7E]|\\[\t \x21-\x7E])*"))*[ \t]*$/;

export interface MediaType {
  /** type/subtype, lowercase. */
  essence: string;
  type: string;
  subtype: string;
  /** The whole value as served: the essence, then the parameters as given. */
  full: string;
}

/** A Content-Type value (RFC 9110 §8.3.1), or undefined when it is not one (or too long). */
export function parseMediaType(raw: string | undefined): MediaType | undefined {
  if (raw === undefined || raw.length > MAX_TYPE_LENGTH) return undefined;
  const semi = raw.indexOf(';');
  const essence = (semi < 0 ? raw : raw.slice(0, semi)).trim().toLowerCase();
  const params = semi < 0 ? '' : raw.slice(semi);
  const slash = essence.indexOf('/');
  const type = essence.slice(0, slash);
  const subtype = essence.slice(slash + 1);
  if (slash < 0 || !TOKEN.test(type) || !TOKEN.test(subtype) || !PARAMS.test(params)) return undefined;
  return { essence, type, subtype, full: `${essence}${params.trimEnd()}` };
}

/** Whether XMPP_UPLOAD_TYPES lets a file of this type in (an empty list: any). */
export function typeAllowed(patterns: readonly MediaPattern[], t: MediaType): boolean {
  return patterns.length === 0 || patterns.some((p) => p.type === t.type && (p.subtype === '*' || p.subtype === t.subtype));
}

/**
 * A file name a slot may be for: not empty, not '.' or '..', within
 * MAX_FILENAME_BYTES, and without what would make it a path or break a
 * header: no '/', '\', NUL or other control characters.
 */
export function validFilename(name: string | undefined): name is string {
  if (name === undefined || name === '' || name === '.' || name === '..') return false;
  if (Buffer.byteLength(name, 'utf8') > MAX_FILENAME_BYTES) return false;
  // eslint-disable-next-line no-control-regex
  return !/[/\\\x00-\x1f\x7f]/.test(name) && name.isWellFormed();
}

/**
 * Types a browser only displays, shown inline when got: pictures in the
 * formats browsers draw without scripts, sound, video, plain text. Anything
 * else (HTML, SVG, XML, PDF, scripts...) could run in the server's origin
 * if shown: it is served as an attachment, to be saved, not rendered.
 */
export function inlineSafe(t: Pick<MediaType, 'type' | 'subtype' | 'essence'>): boolean {
  if (t.type === 'audio' || t.type === 'video') return true;
  return ['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/avif', 'image/bmp', 'text/plain'].includes(t.essence);
}

/** The Content-Disposition of a got file (RFC 6266): its name in ASCII, and in UTF-8 (RFC 8187) for those who read it. */
export function contentDisposition(kind: 'inline' | 'attachment', filename: string): string {
  const ascii = filename.replace(/[^\x20-\x7e]|["\\]/g, '_');
  const utf8 = encodeURIComponent(filename).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `${kind}; filename="${ascii}"; filename*=UTF-8''${utf8}`;
}
