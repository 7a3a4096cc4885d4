// Micro-benchmark of JID preparation (parseJid: PRECIS on the localpart and
// resource, IDNA or IP checks on the domain), which runs on every routed
// stanza's address. Several kinds of address, each timed on its own: plain
// ASCII (the fast paths), mixed case, non-ASCII (the PRECIS tables and NFC),
// internationalized domains (UTS #46), and malformed ones.
//
//   npx node bench/jid.ts [iterations=200000] [rounds=7]
import { parseJid } from '../src/xmpp/jid.ts';
import { median } from './lib.ts';

const iterations = Number(process.argv[2] ?? 200_000);
const rounds = Number(process.argv[3] ?? 7);

const sets: [string, string[]][] = [
  ['ASCII bare', ['juliet@capulet.example', 'romeo@montague.example', 'nurse@capulet.example', 'localhost']],
  ['ASCII full', ['juliet@capulet.example/balcony', 'romeo@montague.example/Conversations.x7Yz', 'alice@localhost/ my phone ']],
  ['mixed case', ['Juliet@Capulet.Example/Balcony', 'ROMEO@montague.EXAMPLE/garden']],
  ['non-ASCII local', ['jürgen@capulet.example/Telefon', 'Σωκράτης@athens.example/λ', '李小龍@example.com/手机', 'ＢＯＢ@localhost/ｘ']],
  ['IDN domain', ['jürgen@münchen.example/x', 'bob@xn--mnchen-3ya.example']],
  ['malformed', ['bob@localhost:5222', 'bob\u200b@localhost', 'a@b@c', 'bob@[::1']],
];

function run(jids: string[]): number {
  let ok = 0;
  for (let i = 0; i < iterations; i++) {
    try {
      parseJid(jids[i % jids.length]);
      ok++;
    } catch {
      // malformed: counted as done all the same
    }
  }
  return ok;
}

console.log(`${iterations.toLocaleString('en')} parseJid calls per round, median of ${rounds} rounds, node ${process.version}`);
for (const [label, jids] of sets) {
  run(jids);
  const times: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    run(jids);
    times.push(Number(process.hrtime.bigint() - t0));
  }
  const ns = median(times) / iterations;
  console.log(`${label.padEnd(16)} ${ns.toFixed(0).padStart(6)} ns/JID ${Math.round(1e9 / ns).toLocaleString('en').padStart(12)} JIDs/s`);
}
