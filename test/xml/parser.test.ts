import test from 'ava';
import type { Element } from 'ltx';
import { StreamParser, ELEMENT_COST, ATTRIBUTE_COST } from '../../src/xml/parser.ts';
import type { StreamHandler, StreamParserOptions, XmlErrorCondition } from '../../src/xml/parser.ts';

type Event =
  | { k: 'start'; name: string; attrs: Record<string, string> }
  | { k: 'el'; xml: string; el: Element }
  | { k: 'end' }
  | { k: 'error'; condition: XmlErrorCondition; text: string };

const NS_STREAM = 'http://etherx.jabber.org/streams';
const HEADER = `<stream:stream xmlns='jabber:client' xmlns:stream='${NS_STREAM}' to='example.com' version='1.0'>`;
const DECL = "<?xml version='1.0'?>";

function setup(options: StreamParserOptions = { maxStanzaBytes: 65536 }, hooks: Partial<StreamHandler> = {}) {
  const events: Event[] = [];
  const parser = new StreamParser(
    {
      streamStart: (name, attrs) => {
        events.push({ k: 'start', name, attrs });
        hooks.streamStart?.(name, attrs);
      },
      element: (el, bytes) => {
        events.push({ k: 'el', xml: el.toString(), el });
        hooks.element?.(el, bytes);
      },
      streamEnd: () => events.push({ k: 'end' }),
      error: (condition, text) => events.push({ k: 'error', condition, text }),
    },
    options,
  );
  return { parser, events };
}

function feed(parser: StreamParser, input: string | Buffer, chunkSize = Infinity): void {
  const buf = typeof input === 'string' ? Buffer.from(input) : input;
  if (chunkSize === Infinity) return parser.write(buf);
  for (let i = 0; i < buf.length; i += chunkSize) parser.write(buf.subarray(i, i + chunkSize));
}

/** Events as plain comparable values. */
function summary(events: Event[]): unknown[] {
  return events.map((e) => (e.k === 'el' ? { k: 'el', xml: e.xml } : e));
}

function parse(input: string | Buffer, chunkSize = Infinity, options?: StreamParserOptions) {
  const { parser, events } = setup(options);
  feed(parser, input, chunkSize);
  return events;
}

function elements(events: Event[]): string[] {
  return events.flatMap((e) => (e.k === 'el' ? [e.xml] : []));
}

function errorOf(events: Event[]): { condition: string; text: string } | undefined {
  const e = events.find((x) => x.k === 'error');
  return e && e.k === 'error' ? { condition: e.condition, text: e.text } : undefined;
}

const CONVERSATION =
  DECL +
  '\n' +
  HEADER +
  ' ' +
  "<message to='juliet@example.com' from='romeo@example.net/orchard' type='chat' id='m1' xml:lang='en'>" +
  '<body>Wherefore art thou? 😀 &lt;3 &amp; café</body><thread>e0ffe42b</thread>' +
  "<active xmlns='http://jabber.org/protocol/chatstates'/></message>\n\t " +
  "<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>\r\n" +
  '<stream:features/>' +
  '</stream:stream>';

const EXPECTED = [
  {
    k: 'start',
    name: 'stream:stream',
    attrs: { 'xmlns': 'jabber:client', 'xmlns:stream': NS_STREAM, 'to': 'example.com', 'version': '1.0' },
  },
  {
    k: 'el',
    xml:
      '<message to="juliet@example.com" from="romeo@example.net/orchard" type="chat" id="m1" xml:lang="en">' +
      '<body>Wherefore art thou? 😀 &lt;3 &amp; café</body><thread>e0ffe42b</thread>' +
      '<active xmlns="http://jabber.org/protocol/chatstates"/></message>',
  },
  { k: 'el', xml: '<iq type="get" id="p1"><ping xmlns="urn:xmpp:ping"/></iq>' },
  { k: 'el', xml: '<stream:features/>' },
  { k: 'end' },
];

// ---- the happy path ----

test('a whole stream in one chunk: header, elements, end', (t) => {
  t.deepEqual(summary(parse(CONVERSATION)), EXPECTED);
});

test('the same stream fed one byte at a time gives the same events', (t) => {
  t.deepEqual(summary(parse(CONVERSATION, 1)), EXPECTED);
});

test('every chunk size from 2 to 64 gives the same events', (t) => {
  for (let size = 2; size <= 64; size++) t.deepEqual(summary(parse(CONVERSATION, size)), EXPECTED, `chunk size ${size}`);
});

test('every split point of the stream into two chunks gives the same events', (t) => {
  const buf = Buffer.from(CONVERSATION);
  for (let p = 1; p < buf.length; p++) {
    const { parser, events } = setup();
    parser.write(buf.subarray(0, p));
    parser.write(buf.subarray(p));
    t.deepEqual(summary(events), EXPECTED, `split at byte ${p}`);
  }
});

test('elements are ltx trees with parents, text children and namespaces', (t) => {
  const events = parse(
    HEADER + "<message to='a@b'><body>hi</body><x xmlns='urn:x'><y>1</y>tail</x></message>",
  );
  const ev = events[1];
  if (ev.k !== 'el') return t.fail('no element');
  const el = ev.el;
  t.is(el.name, 'message');
  t.is(el.parent, null);
  t.deepEqual(el.attrs, { to: 'a@b' });
  t.is(el.getChildText('body'), 'hi');
  const x = el.getChild('x', 'urn:x');
  t.truthy(x);
  t.is(x!.parent, el);
  t.is(x!.getChild('y')!.getNS(), 'urn:x');
  t.deepEqual(x!.children.length, 2);
  t.is(x!.children[1], 'tail');
  t.is(x!.getText(), 'tail');
  t.is(el.getNS(), undefined, 'jabber:client comes from the stream header, which is not the parent');
});

test('prefixed elements bound on the stream header and on the element itself', (t) => {
  const events = parse(
    HEADER + "<stream:error><x:y xmlns:x='urn:x' x:a='1' xml:lang='en'/></stream:error>",
  );
  t.deepEqual(elements(events), ['<stream:error><x:y xmlns:x="urn:x" x:a="1" xml:lang="en"/></stream:error>']);
  t.is(errorOf(events), undefined);
});

test('a prefix may be declared after it is used in the same tag', (t) => {
  t.deepEqual(elements(parse(HEADER + "<p:a p:b='1' xmlns:p='urn:p'/>")), ['<p:a p:b="1" xmlns:p="urn:p"/>']);
});

test('whitespace keepalives between and before elements are ignored', (t) => {
  const events = parse(' \n' + HEADER + ' ' + '<a/>' + '\r\n\t  ' + ' ' + '<b/>' + '\n', 1);
  t.deepEqual(summary(events).slice(1), [
    { k: 'el', xml: '<a/>' },
    { k: 'el', xml: '<b/>' },
  ]);
  // Keepalives alone, in their own chunks, produce nothing.
  const { parser, events: ev2 } = setup();
  feed(parser, HEADER);
  for (let i = 0; i < 100; i++) feed(parser, ' ');
  t.is(ev2.length, 1);
  feed(parser, '<presence/>');
  t.deepEqual(elements(ev2), ['<presence/>']);
});

test('the stream header may come one byte at a time, attributes in either quote style', (t) => {
  const events = parse(`<stream:stream\n  xmlns="jabber:client"\txmlns:stream = '${NS_STREAM}' to="ex&amp;.com" >`, 1);
  t.deepEqual(summary(events), [
    { k: 'start', name: 'stream:stream', attrs: { 'xmlns': 'jabber:client', 'xmlns:stream': NS_STREAM, 'to': 'ex&.com' } },
  ]);
});

test('the XML declaration is accepted before the header (also after whitespace) and ignored', (t) => {
  for (const decl of [
    "<?xml version='1.0'?>",
    '<?xml version="1.0" encoding="UTF-8"?>',
    "<?xml version='1.0' encoding='utf-8' standalone='yes' ?>",
    "\n<?xml version='1.0'?>\n",
  ]) {
    const events = parse(decl + HEADER, 1);
    t.deepEqual(events.map((e) => e.k), ['start'], decl);
  }
});

// ---- UTF-8 ----

test('a 4-byte emoji split at every byte position decodes correctly, in text and attributes', (t) => {
  const stanza = "<message id='a😀b'><body>x😀y€é</body></message>";
  const buf = Buffer.from(HEADER + stanza);
  const at = buf.indexOf(Buffer.from('😀'));
  const at2 = buf.lastIndexOf(Buffer.from('😀'));
  for (const base of [at, at2]) {
    for (let p = 1; p <= 3; p++) {
      const { parser, events } = setup();
      parser.write(buf.subarray(0, base + p));
      parser.write(buf.subarray(base + p));
      t.deepEqual(elements(events), ['<message id="a😀b"><body>x😀y€é</body></message>'], `split at ${p}`);
    }
  }
  // And split into three pieces inside one character.
  const { parser, events } = setup();
  parser.write(buf.subarray(0, at2 + 1));
  parser.write(buf.subarray(at2 + 1, at2 + 2));
  parser.write(buf.subarray(at2 + 2, at2 + 3));
  parser.write(buf.subarray(at2 + 3));
  t.is((events[1] as { el: Element }).el.getChildText('body'), 'x😀y€é');
});

test('non-ASCII element and attribute names are accepted', (t) => {
  t.deepEqual(elements(parse(HEADER + "<日本 名前='値'/>", 1)), ['<日本 名前="値"/>']);
});

test('invalid UTF-8 is not-well-formed', (t) => {
  for (const bad of [
    [0xc3, 0x28], // truncated 2-byte sequence
    [0xc0, 0xaf], // overlong '/'
    [0xed, 0xa0, 0x80], // UTF-16 surrogate
    [0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
    [0x80], // lone continuation byte
    [0xff],
  ]) {
    const head = Buffer.from(HEADER + '<message><body>');
    const events = parse(Buffer.concat([head, Buffer.from(bad), Buffer.from('</body></message>')]));
    t.deepEqual(errorOf(events), { condition: 'not-well-formed', text: 'invalid UTF-8' }, bad.join(','));
    t.deepEqual(elements(events), []);
  }
});

test('invalid UTF-8 fed one byte at a time is still not-well-formed', (t) => {
  for (const bad of [[0xc3, 0x28], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0x80], [0xff], [0xf8, 0x80, 0x80, 0x80]]) {
    const { parser, events } = setup();
    const input = Buffer.concat([Buffer.from(HEADER + '<message><body>'), Buffer.from(bad), Buffer.from('</body></message>')]);
    for (const byte of input) parser.write(Buffer.from([byte]));
    t.deepEqual(errorOf(events), { condition: 'not-well-formed', text: 'invalid UTF-8' }, bad.join(','));
    t.deepEqual(elements(events), []);
  }
});

test('invalid UTF-8 in a chunk comes after the header and stanzas before it, as when the bytes arrive one by one', (t) => {
  for (const bad of [[0xff], [0xc3, 0x28], [0xed, 0xa0, 0x80], [0xe2, 0x82]]) {
    const input = Buffer.concat([Buffer.from(DECL + HEADER + "<message id='1'><body>é</body></message> <iq id='2'/><presence>"), Buffer.from(bad), Buffer.from('</presence>')]);
    const whole = parse(input);
    t.deepEqual(
      summary(whole).map((e) => (e as { k: string }).k),
      ['start', 'el', 'el', 'error'],
      bad.join(','),
    );
    t.deepEqual(elements(whole), ['<message id="1"><body>é</body></message>', '<iq id="2"/>']);
    t.deepEqual(errorOf(whole), { condition: 'not-well-formed', text: 'invalid UTF-8' });
    for (const size of [1, 2, 3, 7]) t.deepEqual(summary(parse(input, size)), summary(whole), `${bad.join(',')} in chunks of ${size}`);
  }
  // A sequence left open by the previous chunk, then broken: the valid rest before the break is parsed too.
  const { parser, events } = setup();
  feed(parser, HEADER + '<a>');
  parser.write(Buffer.from([0xe2]));
  parser.write(Buffer.concat([Buffer.from([0x82, 0xac]), Buffer.from('</a><b/>'), Buffer.from([0x80])]));
  t.deepEqual(elements(events), ['<a>€</a>', '<b/>']);
  t.deepEqual(errorOf(events), { condition: 'not-well-formed', text: 'invalid UTF-8' });
});

test('invalid UTF-8 after a reset() in a callback is dropped with the rest of the chunk', (t) => {
  const made = setup({ maxStanzaBytes: 65536 }, {
    element: (el) => {
      if (el.name === 'starttls') made.parser.reset();
    },
  });
  made.parser.write(Buffer.concat([Buffer.from(HEADER + "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"), Buffer.from([0xff])]));
  t.deepEqual(made.events.map((e) => e.k), ['start', 'el']);
  feed(made.parser, HEADER + '<iq/>');
  t.deepEqual(made.events.map((e) => e.k), ['start', 'el', 'start', 'el']);
});

test('a multi-byte sequence left open by one chunk and not continued by the next is not-well-formed', (t) => {
  for (const next of ['(', '<', 'é']) {
    const { parser, events } = setup();
    feed(parser, HEADER + '<m>');
    parser.write(Buffer.from([0xe2, 0x82])); // first two bytes of '€'
    feed(parser, next + '</m>');
    t.deepEqual(errorOf(events), { condition: 'not-well-formed', text: 'invalid UTF-8' }, next);
  }
});

test('UTF-16 input and a non-UTF-8 encoding declaration are unsupported-encoding', (t) => {
  const utf16le = Buffer.from(DECL + HEADER, 'utf16le');
  const utf16be = Buffer.from(utf16le).swap16();
  for (const [label, buf] of [
    ['UTF-16LE', utf16le],
    ['UTF-16BE', utf16be],
    ['UTF-16LE BOM', Buffer.concat([Buffer.from([0xff, 0xfe]), utf16le])],
    ['UTF-16BE BOM', Buffer.concat([Buffer.from([0xfe, 0xff]), utf16be])],
  ] as const) {
    t.is(errorOf(parse(buf, 1))?.condition, 'unsupported-encoding', label);
    t.is(errorOf(parse(buf))?.condition, 'unsupported-encoding', label);
  }
  const latin1 = parse("<?xml version='1.0' encoding='ISO-8859-1'?>" + HEADER);
  t.deepEqual(errorOf(latin1), {
    condition: 'unsupported-encoding',
    text: "encoding 'ISO-8859-1' declared; only UTF-8 is allowed",
  });
  t.is(latin1.length, 1);
});

test('a byte order mark is a ZWNBSP (RFC 6120 §11.6), so it is not-well-formed before the header', (t) => {
  const events = parse(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(HEADER)]));
  t.deepEqual(errorOf(events), { condition: 'not-well-formed', text: 'U+FEFF before the stream header' });
});

// ---- escaping ----

test('predefined entities and character references decode, and re-serialise escaped', (t) => {
  const events = parse(
    HEADER +
      "<message a='&lt;&quot;&amp;&apos;&gt;' b=\"it's\" c='say \"hi\"'>" +
      '<body>&lt;b&gt; &amp; &quot;q&quot; &apos;a&apos; &#x1F600;&#65;&#x3c;&#10;></body></message>',
  );
  const ev = events[1];
  if (ev.k !== 'el') return t.fail(JSON.stringify(errorOf(events)));
  t.is(ev.el.attrs.a, `<"&'>`);
  t.is(ev.el.attrs.b, "it's");
  t.is(ev.el.attrs.c, 'say "hi"');
  t.is(ev.el.getChildText('body'), `<b> & "q" 'a' 😀A<\n>`);
  t.is(ev.el.getChild('body')!.children.length, 1, 'one text node, not one per reference');
  t.is(
    ev.xml,
    '<message a="&lt;&quot;&amp;&apos;&gt;" b="it&apos;s" c="say &quot;hi&quot;">' +
      `<body>&lt;b&gt; &amp; "q" 'a' 😀A&lt;\n&gt;</body></message>`,
  );
});

test('a reference split across chunks at every position', (t) => {
  const input = HEADER + "<m a='x&#x1F600;y'>p&amp;q</m>";
  const expected = ['<m a="x😀y">p&amp;q</m>'];
  const buf = Buffer.from(input);
  for (let p = HEADER.length; p < buf.length; p++) {
    const { parser, events } = setup();
    parser.write(buf.subarray(0, p));
    parser.write(buf.subarray(p));
    t.deepEqual(elements(events), expected, `split at ${p}`);
  }
});

test('CDATA sections are allowed inside stanzas and join the text', (t) => {
  const input = HEADER + '<body>a<![CDATA[<b>&amp;]]]]]>z</body><body><![CDATA[]]></body>';
  for (const size of [Infinity, 1, 2, 3]) {
    const events = parse(input, size);
    t.deepEqual(elements(events), ['<body>a&lt;b&gt;&amp;amp;]]]z</body>', '<body/>'], `chunk ${size}`);
    const ev = events[1];
    t.is(ev.k === 'el' ? ev.el.children.length : -1, 1);
  }
});

test('line ends are normalised in text and CDATA, attribute whitespace in values', (t) => {
  const input = HEADER + "<m a='1\r\n2\t3\n4\r5' b='&#9;&#10;'>x\r\ny\rz\n<![CDATA[\r\n]]></m>";
  for (const size of [Infinity, 1]) {
    const ev = parse(input, size)[1];
    if (ev.k !== 'el') return t.fail();
    t.is(ev.el.attrs.a, '1 2 3 4 5');
    t.is(ev.el.attrs.b, '\t\n', 'character references are not normalised');
    t.is(ev.el.getText(), 'x\ny\nz\n\n');
  }
});

// ---- restricted XML (RFC 6120 §11.1) ----

const RESTRICTED: [string, string, string][] = [
  ['comment in a stanza', HEADER + '<message><!-- hi --></message>', 'comment'],
  ['comment at stream level', HEADER + '<!-- hi -->', 'comment'],
  ['comment before the header', '<!-- hi -->' + HEADER, 'comment'],
  ['comment after the declaration', DECL + '<!---->' + HEADER, 'comment'],
  ['PI in a stanza', HEADER + '<message><?php echo 1 ?></message>', 'processing instruction'],
  ['PI at stream level', HEADER + '<?foo bar?>', 'processing instruction'],
  ['PI before the header', '<?xml-stylesheet href="a"?>' + HEADER, 'processing instruction <?xml-stylesheet'],
  ['second XML declaration', DECL + DECL + HEADER, 'processing instruction'],
  ['XML declaration after the header', HEADER + DECL, 'processing instruction'],
  ['DOCTYPE', '<!DOCTYPE stream>' + HEADER, 'document type declaration'],
  ['DOCTYPE with internal subset', DECL + '<!DOCTYPE s [<!ENTITY x "y">]>' + HEADER, 'document type declaration'],
  ['DOCTYPE inside a stanza', HEADER + '<m><!DOCTYPE x></m>', 'document type declaration'],
  ['entity reference in text', HEADER + '<m>&nbsp;</m>', 'entity reference &nbsp;'],
  ['entity reference in an attribute', HEADER + "<m a='&xxe;'/>", 'entity reference &xxe;'],
  ['entity reference in the header', "<stream:stream to='&ent;'>", 'entity reference &ent;'],
];

for (const [label, input, text] of RESTRICTED) {
  test(`restricted-xml: ${label}`, (t) => {
    for (const size of [Infinity, 1]) {
      const events = parse(input, size);
      t.deepEqual(errorOf(events), { condition: 'restricted-xml', text }, `chunk ${size}`);
      t.deepEqual(elements(events), []);
      t.is(events.at(-1)!.k, 'error');
    }
  });
}

// ---- ill-formed XML ----

const ILL_FORMED: [string, string, RegExp][] = [
  ['mismatched end tag', HEADER + '<message><body></message></body>', /end tag <\/message> does not match <body>/],
  ['mismatched stream end', HEADER + '</stream>', /end tag <\/stream> does not match <stream:stream>/],
  ['end tag before the header', '</stream:stream>', /end tag before the stream header/],
  ['unquoted attribute', HEADER + '<message to=a@b/>', /not quoted/],
  ['attribute without value', HEADER + '<message checked>', /attribute checked without a value/],
  ['attribute without =', HEADER + "<message to 'x'>", /attribute to without a value/],
  ['duplicate attribute', HEADER + "<message id='1' id='2'/>", /duplicate attribute id/],
  ['duplicate attribute (prototype name)', HEADER + "<m constructor='1' constructor='2'/>", /duplicate attribute constructor/],
  ['< in attribute value', HEADER + "<message id='a<b'/>", /'<' in the value of attribute id/],
  ['no whitespace between attributes', HEADER + "<message a='1'b='2'/>", /missing whitespace after attribute a/],
  ['junk in start tag', HEADER + "<message a='1' ,/>", /illegal character U\+002C in start tag/],
  ['slash not followed by >', HEADER + '<message/ >', /expected '>' after '\/'/],
  ['name starting with a digit', HEADER + '<1message/>', /illegal character U\+0031 after '<'/],
  ['bad character in a name', HEADER + '<mes"sage/>', /illegal character U\+0022 in element name/],
  ['text at stream level', HEADER + ' hello <a/>', /character data at stream level/],
  ['reference at stream level', HEADER + '&#32;', /character data at stream level/],
  ['text before the header', 'hello' + HEADER, /U\+0068 before the stream header/],
  ['CDATA at stream level', HEADER + '<![CDATA[x]]>', /CDATA section at stream level/],
  ['bare ampersand', HEADER + '<m>a & b</m>', /illegal character U\+0020 in reference/],
  ['unterminated reference', HEADER + '<m>&amp</m>', /illegal character U\+003C in reference &amp/],
  ['empty reference', HEADER + '<m>&;</m>', /malformed reference &;/],
  [']]> in text', HEADER + '<m>a]]>b</m>', /']]>' in character data/],
  ['NUL in text', HEADER + '<m>a\u0000b</m>', /illegal character U\+0000/],
  ['C0 control in attribute', HEADER + "<m a='\u0007'/>", /illegal character U\+0007 in attribute a/],
  ['U+FFFF in text', HEADER + '<m>\uffff</m>', /illegal character U\+FFFF/],
  ['reference to U+0001', HEADER + '<m>&#1;</m>', /reference to an illegal character &#1;/],
  ['reference to U+FFFE', HEADER + '<m>&#xFFFE;</m>', /reference to an illegal character/],
  ['reference to a surrogate', HEADER + '<m>&#xD800;</m>', /reference to an illegal character/],
  ['reference beyond Unicode', HEADER + '<m>&#1114112;</m>', /reference to an illegal character/],
  ['malformed character reference', HEADER + '<m>&#x;</m>', /malformed character reference/],
  ['unbound element prefix', HEADER + '<foo:bar/>', /unbound namespace prefix in element foo:bar/],
  ['unbound attribute prefix', HEADER + "<m foo:a='1'/>", /unbound namespace prefix in attribute foo:a/],
  ['prefix bound only on a sibling', HEADER + "<m><a xmlns:p='u'/><p:b/></m>", /unbound namespace prefix in element p:b/],
  ['two colons in a name', HEADER + '<stream:a:b/>', /malformed qualified name stream:a:b/],
  ['undeclaring a prefix', HEADER + "<m xmlns:p=''/>", /illegal namespace declaration/],
  ['binding xmlns', HEADER + "<m xmlns:xmlns='urn:x'/>", /illegal namespace declaration/],
  ['the xml namespace as the default one', HEADER + "<m xmlns='http://www.w3.org/XML/1998/namespace'/>", /illegal default namespace declaration/],
  ['the xmlns namespace as the default one', HEADER + "<m><n xmlns='http://www.w3.org/2000/xmlns/'/></m>", /illegal default namespace declaration/],
  ['the xml namespace as the default one, by references', HEADER + "<m xmlns='http://www.w3.org/XML/1998/&#110;amespace'/>", /illegal default namespace declaration/],
  ['the xml namespace as the stream\'s default one', `<stream:stream xmlns:stream='${NS_STREAM}' xmlns='http://www.w3.org/XML/1998/namespace'>`, /illegal default namespace declaration/],
  ['two prefixes of one namespace on one attribute name', HEADER + "<m xmlns:p='urn:x' xmlns:q='urn:x' p:a='1' q:a='2'/>", /attribute q:a repeats another attribute's expanded name/],
  ['two prefixes of one namespace, declared on an ancestor and the header', HEADER + "<m xmlns:p='urn:x'><n xmlns:q='urn:x' q:a='1' p:a='2'/></m>", /attribute p:a repeats/],
  ['a prefix bound like the xml one', HEADER + "<m xmlns:p='http://www.w3.org/XML/1998/namespace' xml:lang='en' p:lang='fr'/>", /illegal namespace declaration/],
  ['invalid markup after <!', HEADER + '<m><!ELEMENT x></m>', /illegal markup <!E/],
  ['malformed XML declaration', "<?xml encoding='UTF-8'?>" + HEADER, /malformed XML declaration/],
];

for (const [label, input, text] of ILL_FORMED) {
  test(`not-well-formed: ${label}`, (t) => {
    for (const size of [Infinity, 1]) {
      const events = parse(input, size);
      const err = errorOf(events);
      t.is(err?.condition, 'not-well-formed', `chunk ${size}: ${JSON.stringify(err)}`);
      t.regex(err?.text ?? '', text);
      t.deepEqual(elements(events), []);
    }
  });
}

test(']]> split across chunks in text is caught', (t) => {
  for (const parts of [['<m>a]', ']>b</m>'], ['<m>a]]', '>b</m>'], ['<m>]', ']', '>']]) {
    const { parser, events } = setup();
    feed(parser, HEADER);
    for (const p of parts) feed(parser, p);
    t.is(errorOf(events)?.condition, 'not-well-formed', parts.join('|'));
  }
  // but ']]' followed by anything else, or '>' after a reference, is fine
  t.deepEqual(elements(parse(HEADER + '<m>]]x]&#93;>]</m>', 1)), ['<m>]]x]]&gt;]</m>']);
});

test('after an error the parser ignores further input', (t) => {
  const { parser, events } = setup();
  feed(parser, HEADER + '<a></b>');
  t.is(events.length, 2);
  feed(parser, '<c/><d/></stream:stream>');
  t.is(events.length, 2);
  t.is(events[1].k, 'error');
});

test('after the stream end tag further input is ignored', (t) => {
  const events = parse(HEADER + '<a/></stream:stream><b/>garbage');
  t.deepEqual(events.map((e) => e.k), ['start', 'el', 'end']);
});

test('a self-closing stream header is a start and an end', (t) => {
  t.deepEqual(parse(`<stream:stream xmlns:stream='${NS_STREAM}'/>`).map((e) => e.k), ['start', 'end']);
});

// ---- restart ----

test('reset() forgets the stream and expects a fresh header with its own XML declaration', (t) => {
  const { parser, events } = setup();
  feed(parser, DECL + HEADER + "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>");
  t.deepEqual(events.map((e) => e.k), ['start', 'el']);
  parser.reset();
  feed(parser, DECL + HEADER.replace('example.com', 'again.example') + '<iq/>', 1);
  t.deepEqual(events.map((e) => e.k), ['start', 'el', 'start', 'el']);
  t.is((events[2] as { attrs: Record<string, string> }).attrs.to, 'again.example');
  t.is(errorOf(events), undefined);
});

test('reset() in the middle of an element, a tag or a UTF-8 sequence drops it', (t) => {
  const { parser, events } = setup();
  feed(parser, HEADER + "<message><body>x</body><a b='");
  parser.write(Buffer.from([0xf0, 0x9f]));
  parser.reset();
  feed(parser, HEADER + '<presence/>');
  t.deepEqual(summary(events).slice(1), [
    { k: 'start', name: 'stream:stream', attrs: { 'xmlns': 'jabber:client', 'xmlns:stream': NS_STREAM, 'to': 'example.com', 'version': '1.0' } },
    { k: 'el', xml: '<presence/>' },
  ]);
});

test('reset() from an element callback discards the rest of that chunk', (t) => {
  const made = setup({ maxStanzaBytes: 65536 }, {
    element: (el) => {
      if (el.name === 'starttls') made.parser.reset();
    },
  });
  const parser = made.parser;
  feed(parser, HEADER + "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><iq type='set' id='injected'/>");
  t.deepEqual(made.events.map((e) => e.k), ['start', 'el']);
  feed(parser, HEADER + '<iq/>');
  t.deepEqual(made.events.map((e) => e.k), ['start', 'el', 'start', 'el']);
  t.is((made.events[3] as { xml: string }).xml, '<iq/>');
});

test('reset() after an error or a stream end revives the parser', (t) => {
  const { parser, events } = setup();
  feed(parser, HEADER + '<!-- x -->');
  parser.reset();
  feed(parser, HEADER + '<a/></stream:stream>');
  parser.reset();
  feed(parser, HEADER + '<b/>');
  t.deepEqual(events.map((e) => e.k), ['start', 'error', 'start', 'el', 'end', 'start', 'el']);
});

test('end() drops state and ignores later input', (t) => {
  const { parser, events } = setup();
  feed(parser, HEADER + '<message><body>');
  parser.end();
  feed(parser, '</body></message>');
  parser.reset();
  feed(parser, HEADER);
  t.deepEqual(events.map((e) => e.k), ['start']);
});

// ---- size limits ----

test('an element exactly at the limit passes; one byte more is a policy-violation (bytes, not characters)', (t) => {
  const make = (n: number) => `<m>${'é'.repeat(n)}</m>`; // 7 + 2n bytes
  const limit = 7 + 2 * 100;
  for (const size of [Infinity, 1, 7]) {
    t.deepEqual(elements(parse(HEADER + make(100), size, { maxStanzaBytes: limit })), [make(100)], `chunk ${size}`);
    const over = parse(HEADER + make(100) + ' ', size, { maxStanzaBytes: limit - 1 });
    t.is(errorOf(over)?.condition, 'policy-violation', `chunk ${size}`);
    t.deepEqual(elements(over), []);
  }
  // Many small stanzas in one chunk are each measured on their own.
  t.is(elements(parse(HEADER + '<a>xx</a>'.repeat(1000), Infinity, { maxStanzaBytes: 1024 })).length, 1000);
});

/** Feeds `opening`, then `prefix` and `filler` in chunks of `chunk` bytes until an event; returns bytes of prefix + filler written. */
function streamUntilError(opening: string, prefix: string, filler: string | ((k: number) => string), max: number, chunk: number) {
  const { parser, events } = setup({ maxStanzaBytes: max });
  feed(parser, opening);
  const before = events.length;
  feed(parser, prefix);
  let written = Buffer.byteLength(prefix);
  // Multi-byte characters end up split across chunks too.
  const fixed = typeof filler === 'string' ? Buffer.from(filler.repeat(chunk)).subarray(0, chunk) : null;
  for (let k = 0; events.length === before && written < 100 * max; k++) {
    const piece = fixed ?? Buffer.from(typeof filler === 'function' ? filler(k) : '');
    parser.write(piece);
    written += piece.length;
  }
  return { events, written };
}

/** 1000 bytes of distinct attributes: " a<k>x<i>='v'" */
const manyAttributes = (k: number) =>
  Array.from({ length: 50 }, (_, i) => ` a${String(k).padStart(4, '0')}x${String(i).padStart(2, '0')}='vvvvvvvv'`).join('');

const NEVER_ENDING: [string, string, string, string | ((k: number) => string)][] = [
  ['text node', HEADER, '<message><body>', 'lorem ipsum '],
  ['text node, multi-byte', HEADER, '<message><body>', '😀é'],
  ['attribute value', HEADER, "<message id='", 'abcdefgh'],
  ['start tag name', HEADER, '<message', 'abcdefgh'],
  ['start tag attributes', HEADER, '<message', manyAttributes],
  ['attribute name', HEADER, '<message a', 'bcdefgh'],
  ['run of whitespace inside a tag', HEADER, '<message', ' '],
  ['end tag name', HEADER, '<message></message', 'abcdefgh'],
  ['nested elements', HEADER, '<message>', '<a>b</a>'],
  ['CDATA section', HEADER, '<m><![CDATA[', 'xyz]'],
  ['reference', HEADER, '<m>&', 'abcdefgh'],
  ['stream header', '', "<stream:stream to='", 'x'],
  ['XML declaration', '', "<?xml version='1.0'", ' '],
];

for (const [label, opening, prefix, filler] of NEVER_ENDING) {
  test(`policy-violation while it streams in: never-ending ${label}`, (t) => {
    const max = 8192;
    const chunk = 1000;
    const { events, written } = streamUntilError(opening, prefix, filler, max, chunk);
    const err = errorOf(events);
    t.is(err?.condition, 'policy-violation', JSON.stringify(err));
    t.regex(err!.text, /^stanza exceeds 8192 bytes \(\d+ so far\)$/);
    t.true(written > max, `detected too early: ${written}`);
    t.true(written <= max + chunk, `detected only after ${written} bytes`);
  });
}

test('deep nesting beyond maxDepth is a policy-violation', (t) => {
  const ok = parse(HEADER + '<a>'.repeat(10) + '</a>'.repeat(10), Infinity, { maxStanzaBytes: 65536, maxDepth: 10 });
  t.is(elements(ok).length, 1);
  const deep = parse(HEADER + '<a>'.repeat(11), Infinity, { maxStanzaBytes: 65536, maxDepth: 10 });
  t.deepEqual(errorOf(deep), { condition: 'policy-violation', text: 'elements nested deeper than 10' });
});

test('an element with an attribute named __proto__ keeps it as an own attribute', (t) => {
  const ev = parse(HEADER + "<m __proto__='x' id='1'/>")[1];
  if (ev.k !== 'el') return t.fail();
  t.true(Object.hasOwn(ev.el.attrs, '__proto__'));
  t.is(Object.getPrototypeOf(ev.el.attrs), Object.prototype);
  t.is(ev.xml, '<m __proto__="x" id="1"/>');
});

test('attributes with one local name in different namespaces, or unprefixed, are distinct', (t) => {
  const input =
    `<stream:stream xmlns='jabber:client' xmlns:stream='${NS_STREAM}' xmlns:h='urn:h'>` +
    "<m xmlns:p='urn:p' xmlns:q='urn:q' a='0' p:a='1' q:a='2' h:a='3' xml:a='4'><n xmlns:p='urn:q' p:b='5' h:b='6'/></m>";
  for (const size of [Infinity, 1]) {
    const events = parse(input, size);
    t.is(errorOf(events), undefined);
    t.is(elements(events).length, 1);
  }
});

/** `n` empty children in one stanza. */
const children = (n: number) => `<message>${'<a/>'.repeat(n - 1)}</message>`;
/** One stanza of `n` attributes over its elements. */
const attributes = (n: number) => `<m ${Array.from({ length: n }, (_, i) => `a${i}='x'`).join(' ')}/>`;

test('a stanza of exactly maxStanzaElements elements passes; one more is a policy-violation', (t) => {
  const opts = { maxStanzaBytes: 1 << 20, maxStanzaElements: 100 };
  for (const size of [Infinity, 1, 5]) {
    t.is(elements(parse(HEADER + children(100), size, opts)).length, 1, `chunk ${size}`);
    const over = parse(HEADER + children(101), size, opts);
    t.deepEqual(errorOf(over), { condition: 'policy-violation', text: 'stanza has more than 100 elements' }, `chunk ${size}`);
    t.deepEqual(elements(over), []);
    // Nested rather than side by side, and counted anew for each stanza.
    t.is(elements(parse(HEADER + ('<a>'.repeat(50) + '</a>'.repeat(50)).repeat(2) + children(100).repeat(3), size, { ...opts, maxDepth: 64 })).length, 5);
  }
});

test('attributes: four times maxStanzaElements per stanza and on the stream header', (t) => {
  const opts = { maxStanzaBytes: 1 << 20, maxStanzaElements: 16 };
  t.is(elements(parse(HEADER + attributes(64), Infinity, opts)).length, 1);
  // Spread over several elements of one stanza.
  const spread = `<m>${`<c ${Array.from({ length: 5 }, (_, i) => `b${i}='y'`).join(' ')}/>`.repeat(13)}</m>`;
  t.deepEqual(errorOf(parse(HEADER + spread, Infinity, opts)), { condition: 'policy-violation', text: 'stanza has more than 64 attributes' });
  for (const size of [Infinity, 1]) {
    t.deepEqual(errorOf(parse(HEADER + attributes(65), size, opts)), { condition: 'policy-violation', text: 'stanza has more than 64 attributes' });
  }
  const header = (n: number) => `<stream:stream xmlns='jabber:client' xmlns:stream='${NS_STREAM}' ${Array.from({ length: n - 2 }, (_, i) => `h${i}='v'`).join(' ')}>`;
  t.deepEqual(parse(header(64), Infinity, opts).map((e) => e.k), ['start']);
  t.deepEqual(errorOf(parse(header(65), Infinity, opts)), { condition: 'policy-violation', text: 'stream header has more than 64 attributes' });
});

test('too many elements is caught as they stream in, long before the byte limit', (t) => {
  const { parser, events } = setup({ maxStanzaBytes: 1 << 20, maxStanzaElements: 4096 });
  feed(parser, HEADER + '<message>');
  let written = 0;
  while (events.length === 1 && written < 1 << 20) {
    feed(parser, '<a/>'.repeat(256));
    written += 1024;
  }
  t.deepEqual(errorOf(events), { condition: 'policy-violation', text: 'stanza has more than 4096 elements' });
  t.true(written <= 4 * 4096 + 1024, `caught after ${written} bytes`);
});

test('each element comes with its cost: its input bytes and a cost per element and attribute it holds', (t) => {
  const stanzas: [string, number, number][] = [
    ["<message id='a'><body>café 😀</body></message>", 2, 1],
    ['<iq/>', 1, 0],
    [`<m>${'x'.repeat(5000)}</m>`, 1, 0],
    [`<m>${"<a b='1' c='2'/>".repeat(1000)}</m>`, 1001, 2000],
  ];
  for (const size of [Infinity, 1, 100]) {
    const costs: number[] = [];
    const { parser } = setup({ maxStanzaBytes: 65536 }, { element: (_el, cost) => costs.push(cost) });
    feed(parser, HEADER + stanzas.map(([x]) => x).join('\n '), size);
    t.deepEqual(costs, stanzas.map(([x, els, attrs]) => Buffer.byteLength(x) + els * ELEMENT_COST + attrs * ATTRIBUTE_COST), `chunk ${size}`);
  }
});

test('maxStanzaElements must be positive', (t) => {
  t.throws(() => setup({ maxStanzaBytes: 1024, maxStanzaElements: 0 }), { instanceOf: RangeError });
});

test('maxStanzaBytes must be positive', (t) => {
  t.throws(() => setup({ maxStanzaBytes: 0 }), { instanceOf: RangeError });
});

test('an unbound prefix on the stream header is bad-namespace-prefix (RFC 6120 §4.9.3.2)', (t) => {
  for (const size of [Infinity, 1]) {
    const err = errorOf(parse("<stream:stream xmlns='jabber:client'>", size));
    t.is(err?.condition, 'bad-namespace-prefix');
    t.regex(err?.text ?? '', /unbound namespace prefix in element stream:stream/);
  }
});
