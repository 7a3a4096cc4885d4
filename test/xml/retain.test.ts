// Elements kept beyond their stanza must not keep the input they were
// parsed from: the parser's strings are slices of each decoded chunk.
import test from 'ava';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { Element } from 'ltx';
import { StreamParser } from '../../src/xml/parser.ts';
import { retain, flat } from '../../src/xml/retain.ts';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

const HEADER = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>";
const CHUNKS = 48;
const MIB = 1024 * 1024;

/** Parses CHUNKS chunks of 1 MiB, each one holding a small presence, and keeps what `keep` makes of each presence. */
function keepOneFromEach<T>(keep: (el: Element) => T): T[] {
  const kept: T[] = [];
  const pad = 'x'.repeat(MIB);
  for (let i = 0; i < CHUNKS; i++) {
    const parser = new StreamParser(
      {
        streamStart: () => {},
        element: (el) => {
          if (el.name === 'presence') kept.push(keep(el));
        },
        streamEnd: () => {},
        error: (condition, text) => {
          throw new Error(`${condition}: ${text}`);
        },
      },
      { maxStanzaBytes: 2 * MIB },
    );
    // One socket read: the presence and a large message, decoded as one string.
    parser.write(Buffer.from(`${HEADER}<presence id='presence-number-${i}'><status>Away for a while, back at ${i}</status><c xmlns='http://jabber.org/protocol/caps' node='https://client.example/caps'/></presence><message><body>${pad}</body></message>`));
    parser.end();
  }
  return kept;
}

/** Memory of live JavaScript values: the heap and what it holds outside (large decoded strings are external). */
function liveAfterGc(): number {
  gc();
  gc();
  const h = v8.getHeapStatistics();
  return h.used_heap_size + h.external_memory;
}

/** Heap growth while `keep`'s results for every chunk are alive, and those results. */
function growth<T>(keep: (el: Element) => T): { grown: number; kept: T[] } {
  const before = liveAfterGc();
  const kept = keepOneFromEach(keep);
  const grown = liveAfterGc() - before;
  return { grown, kept };
}

const TOTAL = CHUNKS * MIB;
const expected = (i: number) =>
  `<presence id="presence-number-${i}"><status>Away for a while, back at ${i}</status><c xmlns="http://jabber.org/protocol/caps" node="https://client.example/caps"/></presence>`;

// Serial: each measures the whole heap of this process.
test.serial('the premise: a parsed element kept as it is keeps its whole input chunk', (t) => {
  const { grown, kept } = growth((el) => el);
  t.log(`kept ${(grown / MIB).toFixed(1)} MiB for ${CHUNKS} chunks of 1 MiB`);
  t.true(grown > TOTAL * 0.75, `kept ${(grown / MIB).toFixed(1)} MiB for ${CHUNKS} chunks of 1 MiB`);
  t.is(kept.length, CHUNKS);
});

test.serial('retain() keeps an element without its input chunk', (t) => {
  const { grown, kept } = growth(retain);
  t.log(`kept ${(grown / MIB).toFixed(1)} MiB for ${CHUNKS} chunks of 1 MiB`);
  t.true(grown < TOTAL / 8, `kept ${(grown / MIB).toFixed(1)} MiB for ${CHUNKS} chunks of 1 MiB`);
  t.deepEqual(kept.map((el) => el.toString()), kept.map((_, i) => expected(i)));
  t.is(kept[0].getChild('c')!.parent, kept[0]);
  t.is(kept[0].getChild('c')!.getNS(), 'http://jabber.org/protocol/caps');
});

test.serial('the premise: a string serialised from a parsed element keeps the chunks too', (t) => {
  const { grown, kept } = growth((el) => el.toString());
  t.log(`kept ${(grown / MIB).toFixed(1)} MiB`);
  t.true(grown > TOTAL * 0.75, `kept ${(grown / MIB).toFixed(1)} MiB`);
  t.is(kept.length, CHUNKS);
});

test.serial('flat() of a serialised element keeps only its characters', (t) => {
  const { grown, kept } = growth((el) => flat(el.toString()));
  t.log(`kept ${(grown / MIB).toFixed(1)} MiB`);
  t.true(grown < TOTAL / 8, `kept ${(grown / MIB).toFixed(1)} MiB`);
  t.deepEqual(kept, kept.map((_, i) => expected(i)));
});

test('retain() copies names, attributes (__proto__ included) and text, detached', (t) => {
  let got: Element | undefined;
  const parser = new StreamParser(
    { streamStart: () => {}, element: (el) => (got = el), streamEnd: () => {}, error: () => {} },
    { maxStanzaBytes: 65536 },
  );
  parser.write(Buffer.from(`${HEADER}<m __proto__='p' id='1'>a<x:y xmlns:x='urn:x' x:z='2'>b</x:y>c</m>`));
  const copy = retain(got!);
  t.not(copy, got);
  t.is(copy.parent, null);
  t.true(Object.hasOwn(copy.attrs, '__proto__'));
  t.is(Object.getPrototypeOf(copy.attrs), Object.prototype);
  t.is(copy.toString(), got!.toString());
  const y = copy.getChild('y', 'urn:x')!;
  t.is(y.parent, copy);
  y.attrs['x:z'] = 'changed';
  t.is(got!.getChild('y', 'urn:x')!.attrs['x:z'], '2', 'a copy, not a view');
});
