// Copies for what outlives its stanza. The parser's names, attribute values
// and text are V8 slices of the decoded input chunk (up to a socket read, or
// a whole stanza's worth of text), and a string concatenated from them
// (el.toString(), a JID built from a resource) is a tree whose leaves are
// those slices: keeping any of them keeps every chunk it came from. Whatever
// is stored beyond the handling of its stanza (a session's last presence,
// the JIDs it sent directed presence to, caches) goes through these first.
import { Element } from 'ltx';

/**
 * A copy of `s` that shares no memory with the string it came from. Slicing
 * a concatenation makes V8 flatten it into a fresh string first; the slice
 * then points into that fresh string, which holds only these characters.
 */
export function flat(s: string): string {
  return (' ' + s).slice(1);
}

/** A deep copy of `el` (detached: parent null) whose every string is flat(). */
export function retain(el: Element): Element {
  const copy = new Element(flat(el.name));
  copy.attrs = copyAttrs(el.attrs);
  for (const child of el.children) {
    if (typeof child === 'string') copy.children.push(flat(child));
    else {
      const c = retain(child);
      c.parent = copy;
      copy.children.push(c);
    }
  }
  return copy;
}

function copyAttrs(attrs: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of Object.keys(attrs)) {
    const v: unknown = attrs[key];
    // Builders may leave null or undefined values (not serialised): kept as they are.
    const value = (typeof v === 'string' ? flat(v) : v) as string;
    // An attribute named __proto__ stays an own attribute, as the parser made it.
    if (key === '__proto__') Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
    else out[flat(key)] = value;
  }
  return out;
}
