// The parts of @xmpp/client (untyped JavaScript) the tests use.
declare module '@xmpp/client' {
  import type { Element } from 'ltx';
  import type { EventEmitter } from 'node:events';
  interface Client extends EventEmitter {
    start(): Promise<unknown>;
    stop(): Promise<void>;
    send(el: Element): Promise<void>;
    jid: { toString(): string; local: string; resource: string } | null;
    status: string;
    iqCaller: { request(el: Element, timeout?: number): Promise<Element>; get(el: Element, to?: string): Promise<Element>; set(el: Element, to?: string): Promise<Element> };
    reconnect: { start(): void; stop(): void; delay: number };
  }
  export function client(options: Record<string, unknown>): Client;
  export function xml(name: string, attrs?: Record<string, string> | null, ...children: (Element | string)[]): Element;
  export function jid(s: string): { toString(): string };
}
