// Types for ltx 3.1 (ships none). Only the ESM entry (src/ltx.js) is
// described; it has named exports only, no default export.
declare module 'ltx' {
  import type { EventEmitter } from 'node:events';

  /** A child node: an element or a text string (unescaped). */
  export type Node = Element | string;

  /**
   * Attributes as accepted by the builders. null/undefined values are kept
   * in `attrs` but skipped when serialising.
   */
  export type AttrsInput = Record<string, string | undefined | null>;

  export class Element {
    /** Qualified name as written, e.g. 'stream:features' or 'message'. */
    name: string;
    /** Attributes as written, xmlns declarations included; values unescaped. */
    attrs: Record<string, string>;
    children: Node[];
    parent: Element | null;

    /** `attrs` may be an xmlns string, shorthand for `{ xmlns }`. */
    constructor(name: string, attrs?: AttrsInput | string);

    /** Local name equals `name` and, if given, getNS() equals `xmlns`. */
    is(name: string, xmlns?: string): boolean;
    /** Local name (prefix stripped). */
    getName(): string;
    /**
     * Namespace of this element, resolved from its own and its ancestors'
     * declarations; undefined when none is in scope (a parsed top-level
     * stanza inherits jabber:client from the stream header, which is not
     * its parent).
     */
    getNS(): string | undefined;
    findNS(prefix?: string): string | undefined;
    /** Namespaces in scope as { uri: prefix } ('' for the default). */
    getXmlns(): Record<string, string>;
    setAttrs(attrs?: AttrsInput | string): void;
    getAttr(name: string, xmlns?: string): string | null | undefined;
    /** First child element whose local name is `name` (and namespace, if given). */
    getChild(name: string, xmlns?: string): Element | undefined;
    getChildren(name: string, xmlns?: string): Element[];
    getChildByAttr(attr: string, val: string, xmlns?: string, recursive?: boolean): Element | undefined;
    getChildrenByAttr(attr: string, val: string, xmlns?: string, recursive?: boolean): Element[];
    getChildrenByFilter(filter: (child: Node) => boolean, recursive?: boolean): Node[];
    getChildElements(): Element[];
    /** Concatenation of the direct text children. */
    getText(): string;
    /** Text of the first matching child; null (not undefined) if absent. */
    getChildText(name: string, xmlns?: string): string | null;

    /** Topmost ancestor (or this). */
    root(): Element;
    tree(): Element;
    /** Parent, or this element when it has none. */
    up(): Element;
    /** Appends a new child element and returns the child. */
    c(name: string, attrs?: AttrsInput | string): Element;
    /** Appends a node (setting its parent) and returns it. */
    cnode<T extends Node>(child: T): T;
    append(...nodes: Node[]): void;
    prepend(...nodes: Node[]): void;
    /** Appends a text child and returns this element. */
    t(text: string): this;
    /** Removes a child element, or the children matching name/xmlns. */
    remove(el: Element | string, xmlns?: string): this;
    /**
     * Without argument: getText(). With one: replaces the text ONLY if the
     * element has exactly one child (returning this); otherwise it changes
     * nothing and returns getText().
     */
    text(): string;
    text(val: string): this | string;
    attr(name: string): string | undefined;
    /** Sets an attribute (null: kept but not serialised) and returns this. */
    attr(name: string, val: string | null): this;

    /** Serialises with attribute values and text escaped. */
    toString(): string;
    write(writer: (s: string) => void): void;
  }

  /**
   * ltx's incremental document parser (events 'tree' and 'error'). Lenient,
   * and it decodes every chunk on its own, breaking UTF-8 characters split
   * across chunks: the server reads streams with src/xml/parser.ts instead.
   */
  export class Parser extends EventEmitter {
    constructor(options?: { Parser?: unknown; Element?: typeof Element });
    write(data: string | Uint8Array): void;
    end(data?: string | Uint8Array): void;
  }

  /**
   * Parses a complete document with ltx's lenient parser (it skips comments
   * and PIs and does not check well-formedness). Throws on unknown entities
   * or an incomplete document. Not for untrusted input: use StreamParser.
   */
  export function parse(data: string): Element;
  export function createElement(name: string, attrs?: AttrsInput | null, ...children: (Node | Node[] | null | undefined | boolean)[]): Element;
  /** Escapes & < > " ' (for attribute values). */
  export function escapeXML(s: string): string;
  /** Decodes the five predefined entities and numeric references; throws on others. */
  export function unescapeXML(s: string): string;
  /** Escapes & < > (for text). */
  export function escapeXMLText(s: string): string;
  export function unescapeXMLText(s: string): string;
  export function isNode(x: unknown): x is Node;
  export function isElement(x: unknown): x is Element;
  export function isText(x: unknown): x is string;
  export function clone<T extends Node>(el: T): T;
  export function equal(a: Element, b: Element): boolean;
  export function nameEqual(a: Element, b: Element): boolean;
  export function attrsEqual(a: Element, b: Element): boolean;
  export function childrenEqual(a: Element, b: Element): boolean;
  /**
   * Pretty printer. Beware: an element whose only child is a text node gets
   * that text WITHOUT escaping. Use toString() for anything sent on the wire.
   */
  export function stringify(el: Element, indent?: number | string, level?: number): string;
}
