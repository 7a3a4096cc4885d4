// What the stream engine reads from and writes to. A byte stream (TCP,
// with or without TLS) is parsed by the engine itself, one XML document
// for the whole stream (RFC 6120 §4). A framed transport carries the
// stream as whole elements instead, each a document of its own, the
// stream's header and end being elements too: WebSocket (RFC 7395), and
// BOSH (XEP-0206, web/bosh.ts), whose header and end are the session's
// creation and termination. The engine negotiates, bounds and paces the
// same over either.
import type { Element } from 'ltx';
import type { XmlErrorCondition } from '../xml/parser.ts';

/** What output is written to and reading is paused on: a TCP or TLS socket, or a framed transport. */
export interface Wire {
  readonly destroyed: boolean;
  /** Output handed over and not yet on the network: what paces the engine's output. */
  readonly writableLength: number;
  write(data: string, cb: (err?: Error | null) => void): unknown;
  /** Once what was handed over has gone down (after writableLength grew past the wire's mark). */
  once(event: 'drain', listener: () => void): unknown;
  /** No more output: the connection's orderly end, after `data` if given. */
  end(): unknown;
  end(data: string): unknown;
  destroy(): unknown;
  pause(): unknown;
  resume(): unknown;
}

/** The connection's far end, for the log, and its end at once. */
export interface Peer {
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  destroy(): unknown;
}

/** What a framed transport tells the engine, message by message. */
export interface FrameSink {
  /** A message of `bytes` arrived (the read rate counts it, and it is activity). */
  read(bytes: number): void;
  /** The stream's header (RFC 7395 §3.3.2 <open/>): its attributes as written, the framing namespace's declaration left out. */
  open(attrs: Record<string, string>): void;
  /** A top-level element, and what it costs to hold (StreamHandler.element). */
  element(el: Element, cost: number): void;
  /** The stream's end (RFC 7395 §3.3.2 <close/>). */
  close(): void;
  /** A message that is not one well-formed element within the limits: the stream ends with this error. */
  error(condition: XmlErrorCondition, text: string): void;
}

/**
 * A connection that carries the stream as whole elements. Output handed to
 * write() may hold several top-level elements (a header and its features,
 * an error and the end): the transport frames each on its own.
 */
export interface FramedTransport extends Wire, Peer {
  /** What kind of transport, for the log and the metrics. */
  readonly kind: 'websocket' | 'bosh';
  /**
   * Whether authentication may happen without more (RFC 6120 §5.3.1): TLS
   * protects the connection, or its plain form is trusted (loopback, a
   * TLS-terminating proxy). There is no STARTTLS on a framed transport
   * (RFC 7395 §3.9).
   */
  readonly secure: boolean;
  /** Starts delivering what arrives to `sink`. */
  attach(sink: FrameSink): void;
  /** Called once, when the connection is gone. */
  onClose(fn: () => void): void;
  /** Our stream header with these attributes (already serialised: ` id='...' from='...'...`). */
  header(attrs: string): string;
  /** The end of our stream. */
  readonly footer: string;
  /** The end of our stream telling the client to reconnect at `uri` (RFC 7395 §3.6.1 see-other-uri), where the framing has it. */
  redirect?(uri: string): string;
}

export function isFramed(conn: object): conn is FramedTransport {
  return 'attach' in conn && 'footer' in conn;
}
