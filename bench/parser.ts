// Micro-benchmark of the stream parser: a realistic client stream (chat
// messages with chat states and receipts, presence with caps, iq pings and
// roster pushes, some non-ASCII text, whitespace keepalives) fed in 4 KiB
// chunks, as a socket would deliver it. For reference it also times ltx's
// own (non-validating) parser on the same chunks.
//
//   npx node bench/parser.ts [megabytes=16] [rounds=7]
import { Parser as LtxParser } from 'ltx';
import { StreamParser } from '../src/xml/parser.ts';
import { median } from './lib.ts';

const CHUNK = 4096;
const targetBytes = Number(process.argv[2] ?? 16) * 1024 * 1024;
const rounds = Number(process.argv[3] ?? 7);

const header =
  "<?xml version='1.0'?><stream:stream xmlns='jabber:client' " +
  "xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' xml:lang='en'>";

const bodies = [
  'ok',
  'See you at 5?',
  'Wherefore art thou Romeo? Deny thy father and refuse thy name; or, if thou wilt not, be but sworn my love.',
  'Ça marche, à demain 👍',
  'Price is 5 &lt; 7 &amp; that&apos;s &quot;fine&quot;',
  'Здравствуйте! Как дела? 今日はいい天気ですね。',
  'https://example.org/some/rather/long/link?with=query&amp;parameters=true#and-a-fragment',
];

function stanza(i: number): string {
  const id = `id${i.toString(36)}-${(i * 2654435761) % 100000}`;
  switch (i % 10) {
    case 0:
      return (
        `<presence id='${id}'><show>away</show><status>In a meeting</status><priority>5</priority>` +
        `<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://conversations.im' ver='q07IKJEyjvHSyhy//CH0CxmKi8w='/></presence>`
      );
    case 1:
      return `<iq type='get' id='${id}' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>`;
    case 2:
      return `<iq type='result' id='${id}' to='example.com/res'/>`;
    case 3:
      return (
        `<message to='juliet@capulet.example' type='chat' id='${id}'>` +
        `<composing xmlns='http://jabber.org/protocol/chatstates'/></message>`
      );
    default:
      return (
        `<message to='juliet@capulet.example/balcony' from='romeo@montague.example/garden' type='chat' id='${id}' xml:lang='en'>` +
        `<body>${bodies[i % bodies.length]}</body><active xmlns='http://jabber.org/protocol/chatstates'/>` +
        `<request xmlns='urn:xmpp:receipts'/><origin-id xmlns='urn:xmpp:sid:0' id='${id}'/>` +
        `<store xmlns='urn:xmpp:hints'/></message>`
      );
  }
}

let text = header;
let stanzas = 0;
while (text.length < targetBytes) {
  text += stanza(stanzas++);
  if (stanzas % 7 === 0) text += ' '; // keepalive
}
const input = Buffer.from(text);
const chunks: Buffer[] = [];
for (let i = 0; i < input.length; i += CHUNK) chunks.push(input.subarray(i, i + CHUNK));

function runOurs(): number {
  let n = 0;
  let failed = '';
  const p = new StreamParser(
    {
      streamStart: () => {},
      element: () => {
        n++;
      },
      streamEnd: () => {},
      error: (c, t) => {
        failed = `${c}: ${t}`;
      },
    },
    { maxStanzaBytes: 256 * 1024 },
  );
  for (const c of chunks) p.write(c);
  if (failed) throw new Error(failed);
  return n;
}

function runLtx(): number {
  let n = 0;
  let depth = 0;
  const p = new LtxParser();
  // ltx's Parser builds one tree for the whole document; count depth-1 elements.
  const sax = (p as unknown as { parser: { on(e: string, f: () => void): void } }).parser;
  sax.on('startElement', () => depth++);
  sax.on('endElement', () => {
    if (--depth === 1) n++;
  });
  for (const c of chunks) p.write(c);
  return n;
}

function bench(label: string, fn: () => number): void {
  fn(); // warm up
  fn();
  const times: number[] = [];
  let count = 0;
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    count = fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  const t = median(times);
  if (count !== stanzas) throw new Error(`${label}: ${count} stanzas, expected ${stanzas}`);
  const mb = input.length / 1e6 / t;
  console.log(
    `${label.padEnd(22)} ${mb.toFixed(1).padStart(7)} MB/s ${Math.round(stanzas / t).toLocaleString('en').padStart(11)} stanzas/s` +
      `   (median of ${rounds}, ${(t * 1000).toFixed(1)} ms)`,
  );
}

console.log(
  `${(input.length / 1e6).toFixed(1)} MB, ${stanzas.toLocaleString('en')} stanzas (avg ${Math.round(input.length / stanzas)} B), ` +
    `${chunks.length.toLocaleString('en')} chunks of ${CHUNK} B, node ${process.version}`,
);
bench('StreamParser', runOurs);
bench('ltx Parser (reference)', runLtx);
