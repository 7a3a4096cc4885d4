// Namespaces used on the wire (RFC 6120 §4.8, §5.4, §6.4, §7.4, §8.3; XEPs as named).
export const NS_STREAM = 'http://etherx.jabber.org/streams';
export const NS_CLIENT = 'jabber:client';
export const NS_STREAMS_ERR = 'urn:ietf:params:xml:ns:xmpp-streams';
export const NS_STANZAS_ERR = 'urn:ietf:params:xml:ns:xmpp-stanzas';
export const NS_TLS = 'urn:ietf:params:xml:ns:xmpp-tls';
export const NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';
export const NS_BIND = 'urn:ietf:params:xml:ns:xmpp-bind';
export const NS_SESSION = 'urn:ietf:params:xml:ns:xmpp-session';
export const NS_PING = 'urn:xmpp:ping';
export const NS_DISCO_INFO = 'http://jabber.org/protocol/disco#info';
export const NS_DISCO_ITEMS = 'http://jabber.org/protocol/disco#items';
export const NS_VERSION = 'jabber:iq:version';
export const NS_REGISTER = 'jabber:iq:register';
export const NS_REGISTER_FEATURE = 'http://jabber.org/features/iq-register';
export const NS_XML = 'http://www.w3.org/XML/1998/namespace';
export const NS_CARBONS = 'urn:xmpp:carbons:2';
export const NS_CSI = 'urn:xmpp:csi:0';
export const NS_SM = 'urn:xmpp:sm:3';
export const NS_FORWARD = 'urn:xmpp:forward:0';
export const NS_HINTS = 'urn:xmpp:hints';
export const NS_RECEIPTS = 'urn:xmpp:receipts';
export const NS_MARKERS = 'urn:xmpp:chat-markers:0';
export const NS_CHATSTATES = 'http://jabber.org/protocol/chatstates';
export const NS_DELAY = 'urn:xmpp:delay';
export const NS_SID = 'urn:xmpp:sid:0';
/** XEP-0160 disco feature: offline messages are stored. */
export const NS_MSGOFFLINE = 'msgoffline';
