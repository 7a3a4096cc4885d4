// PRECIS (RFC 8264) and the two profiles of RFC 8265 that JIDs use (RFC 7622):
// UsernameCaseMapped for localparts and OpaqueString for resourceparts. No
// maintained npm package implements RFC 8264/8265 with current Unicode data,
// so the code point tables are generated (scripts/precis-tables.ts) from one
// pinned Unicode version; case mapping and NFC are the runtime's own.
import { PROPERTY, BIDI, JOINING, VIRAMA, WIDTH } from './precis-tables.ts';

export class PrecisError extends Error {
  override name = 'PrecisError';
}

/** A run-length table (see precis-tables.ts) decoded for binary search. */
class RunTable {
  private readonly starts: Uint32Array;
  private readonly values: string;

  constructor(encoded: string) {
    const runs = [...encoded.matchAll(/([0-9a-z]+)([A-Z])/g)];
    this.starts = new Uint32Array(runs.length);
    let cp = 0;
    let values = '';
    runs.forEach((m, i) => {
      this.starts[i] = cp;
      cp += parseInt(m[1], 36);
      values += m[2];
    });
    if (cp !== 0x110000) throw new Error('PRECIS table does not cover the code space');
    this.values = values;
  }

  get(cp: number): string {
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.starts[mid] <= cp) lo = mid;
      else hi = mid - 1;
    }
    return this.values[lo];
  }

  /** A regular expression matching any code point whose value is one of `values`. */
  matcher(values: string): RegExp {
    const hex = (cp: number) => `\\u{${cp.toString(16)}}`;
    let set = '';
    for (let i = 0; i < this.starts.length; i++) {
      if (!values.includes(this.values[i])) continue;
      const last = (i + 1 < this.starts.length ? this.starts[i + 1] : 0x110000) - 1;
      set += this.starts[i] === last ? hex(last) : `${hex(this.starts[i])}-${hex(last)}`;
    }
    return new RegExp(`[${set}]`, 'u');
  }
}

const property = new RunTable(PROPERTY);
const bidiClass = new RunTable(BIDI);
const joiningType = new RunTable(JOINING);
const virama = new Set(VIRAMA);
const widthMapping = new Map<number, number>();
for (const [first, count, to] of WIDTH) for (let i = 0; i < count; i++) widthMapping.set(first + i, to + i);
// Most strings hold neither: these tests let them skip the work.
const HAS_WIDE = new RegExp(`[${WIDTH.map(([first, count]) => `\\u{${first.toString(16)}}-\\u{${(first + count - 1).toString(16)}}`).join('')}]`, 'u');
const HAS_RTL = bidiClass.matcher('RAN');

const u = (cp: number) => `U+${cp.toString(16).toUpperCase().padStart(4, '0')}`;

const GREEK = /\p{Script=Greek}/u;
const HEBREW = /\p{Script=Hebrew}/u;
const KANA_HAN = /[\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Han}]/u;
const script = (re: RegExp, cp: number | undefined) => cp !== undefined && re.test(String.fromCodePoint(cp));
const isArabicIndic = (cp: number) => cp >= 0x0660 && cp <= 0x0669;
const isExtendedArabicIndic = (cp: number) => cp >= 0x06f0 && cp <= 0x06f9;

/** RFC 5892 appendix A.1 (ZERO WIDTH NON-JOINER) and A.2 (ZERO WIDTH JOINER). */
function contextJ(cps: number[], i: number): boolean {
  if (i > 0 && virama.has(cps[i - 1])) return true;
  if (cps[i] !== 0x200c) return false;
  let before = i - 1;
  while (before >= 0 && joiningType.get(cps[before]) === 'T') before--;
  let after = i + 1;
  while (after < cps.length && joiningType.get(cps[after]) === 'T') after++;
  return before >= 0 && 'LD'.includes(joiningType.get(cps[before])) && after < cps.length && 'RD'.includes(joiningType.get(cps[after]));
}

/** RFC 5892 appendix A.3 to A.9. */
function contextO(cps: number[], i: number): boolean {
  const cp = cps[i];
  if (cp === 0x00b7) return cps[i - 1] === 0x6c && cps[i + 1] === 0x6c;
  if (cp === 0x0375) return script(GREEK, cps[i + 1]);
  if (cp === 0x05f3 || cp === 0x05f4) return script(HEBREW, cps[i - 1]);
  if (cp === 0x30fb) return cps.some((c) => script(KANA_HAN, c));
  if (isArabicIndic(cp)) return !cps.some(isExtendedArabicIndic);
  if (isExtendedArabicIndic(cp)) return !cps.some(isArabicIndic);
  return false;
}

/**
 * Every code point must be allowed by the string class (RFC 8264 §4.2.1 and
 * §4.3.1: PVALID, FREE_PVAL in the FreeformClass only, CONTEXTJ and CONTEXTO
 * when their rule holds); DISALLOWED and UNASSIGNED never are.
 */
export function checkClass(s: string, freeform: boolean): void {
  // Code points read in place; the array the context rules look around in
  // is built only for the rare CONTEXTJ and CONTEXTO ones.
  let cps: number[] | undefined;
  for (let at = 0, i = 0; at < s.length; i++) {
    const cp = s.codePointAt(at)!;
    at += cp > 0xffff ? 2 : 1;
    if (cp >= 0x21 && cp <= 0x7e) continue; // ASCII7, PVALID (RFC 8264 §9.11)
    switch (property.get(cp)) {
      case 'P': continue;
      case 'F': if (freeform) continue; throw new PrecisError(`${u(cp)} is not allowed in an identifier`);
      case 'J': if (contextJ((cps ??= codePoints(s)), i)) continue; throw new PrecisError(`${u(cp)} is not allowed here (RFC 5892 appendix A)`);
      case 'O': if (contextO((cps ??= codePoints(s)), i)) continue; throw new PrecisError(`${u(cp)} is not allowed here (RFC 5892 appendix A)`);
      case 'U': throw new PrecisError(`${u(cp)} is unassigned`);
      default: throw new PrecisError(`${u(cp)} is disallowed`);
    }
  }
}

const codePoints = (s: string): number[] => Array.from(s, (c) => c.codePointAt(0)!);

/** RFC 5893 §2, for strings holding a right-to-left code point (R, AL) or an Arabic number (AN). */
export function checkBidi(s: string): void {
  if (!HAS_RTL.test(s)) return;
  const classes = Array.from(s, (c) => bidiClass.get(c.codePointAt(0)!));
  const fail = (rule: number) => new PrecisError(`breaks rule ${rule} of the Bidi Rule (RFC 5893 §2)`);
  let last = classes.length - 1;
  while (last > 0 && classes[last] === 'M') last--;
  if (classes[0] === 'R' || classes[0] === 'A') {
    if (!classes.every((c) => 'RANESCTOBM'.includes(c))) throw fail(2);
    if (!'RAEN'.includes(classes[last])) throw fail(3);
    if (classes.includes('E') && classes.includes('N')) throw fail(4);
  } else if (classes[0] === 'L') {
    if (!classes.every((c) => 'LESCTOBM'.includes(c))) throw fail(5);
    if (!'LE'.includes(classes[last])) throw fail(6);
  } else {
    throw fail(1);
  }
}

/** RFC 8265 §3.4.1: fullwidth and halfwidth code points to their decomposition mappings. */
function widthMap(s: string): string {
  if (!HAS_WIDE.test(s)) return s;
  let out = '';
  for (const c of s) {
    const to = widthMapping.get(c.codePointAt(0)!);
    out += to === undefined ? c : String.fromCodePoint(to);
  }
  return out;
}

// Printable ASCII: PVALID in both classes (RFC 8264 §9.11), and the space
// FREE_PVAL. None of it changes under width mapping, NFC or the Bidi Rule.
const ASCII_IDENTIFIER = /^[\x21-\x7e]+$/;
const ASCII_FREEFORM = /^[\x20-\x7e]+$/;
const NON_ASCII_SPACE = /(?!\x20)\p{Zs}/gu;

/**
 * RFC 8264 §7: the rules are applied again until the result is stable,
 * at most three more times; a string that does not settle is refused.
 */
function untilStable(input: string, apply: (s: string) => string): string {
  if (input.length === 0) throw new PrecisError('empty');
  if (!input.isWellFormed()) throw new PrecisError('not well-formed UTF-16');
  let s = input;
  for (let round = 0; round < 4; round++) {
    const out = apply(s);
    if (out === s) return out;
    s = out;
  }
  throw new PrecisError('does not reach a stable form');
}

/**
 * Enforcement of the UsernameCaseMapped profile (RFC 8265 §3.3.2): width
 * mapping, IdentifierClass, toLowerCase(), NFC, the Bidi Rule. Throws
 * PrecisError for a string the profile refuses (never empty).
 */
export function usernameCaseMapped(input: string): string {
  if (ASCII_IDENTIFIER.test(input)) return input.toLowerCase();
  return untilStable(input, (s) => {
    const prepared = widthMap(s);
    checkClass(prepared, false);
    const out = prepared.toLowerCase().normalize('NFC');
    checkBidi(out);
    return out;
  });
}

/**
 * Enforcement of the OpaqueString profile (RFC 8265 §4.2.2): FreeformClass,
 * non-ASCII spaces to U+0020, NFC; no width or case mapping. Throws
 * PrecisError for a string the profile refuses (never empty).
 */
export function opaqueString(input: string): string {
  if (ASCII_FREEFORM.test(input)) return input;
  return untilStable(input, (s) => {
    checkClass(s, true);
    return s.replace(NON_ASCII_SPACE, ' ').normalize('NFC');
  });
}
