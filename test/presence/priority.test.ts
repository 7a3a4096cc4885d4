// RFC 6121 §4.7.2.3: the priority a presence stanza gives its resource, as
// both the session (when it reads the stanza) and the presence service (when
// it records it) take it.
import test from 'ava';
import { parse } from 'ltx';
import { priorityOf } from '../../src/presence/presence.ts';

const presence = (inner: string) => parse(`<presence xmlns='jabber:client'>${inner}</presence>`);

test('absent: 0', (t) => {
  t.is(priorityOf(presence('')), 0);
});

test('an integer in range is kept, negative included', (t) => {
  t.is(priorityOf(presence('<priority>5</priority>')), 5);
  t.is(priorityOf(presence('<priority>-1</priority>')), -1);
  t.is(priorityOf(presence('<priority>127</priority>')), 127);
  t.is(priorityOf(presence('<priority>-128</priority>')), -128);
});

test('out of range is clamped to -128..127', (t) => {
  t.is(priorityOf(presence('<priority>1000</priority>')), 127);
  t.is(priorityOf(presence('<priority>-1000</priority>')), -128);
});

test('unreadable: 0', (t) => {
  t.is(priorityOf(presence('<priority>high</priority>')), 0);
  t.is(priorityOf(presence('<priority></priority>')), 0);
});
