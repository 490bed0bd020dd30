import test from 'ava';
import fc from 'fast-check';
import {
  MASTER_SERVICE_AVAILABLE,
  MASTER_SERVICE_CONNECTION,
  MASTER_SERVICE_CONNECTION_MULTI,
  MASTER_SERVICE_UNAVAILABLE,
  NOTIFY_MESSAGE_SIZE,
  decodeNotifyMessage,
  detectFrontEnd,
  encodeNotifyMessage,
  messageName,
  reuseTimeoutSeconds,
  type FdProbe,
} from '../src/server/master-service.js';

test('notify message: master/service.h codes', (t) => {
  t.is(MASTER_SERVICE_AVAILABLE, 1);
  t.is(MASTER_SERVICE_UNAVAILABLE, 2);
  t.is(MASTER_SERVICE_CONNECTION, 3);
  t.is(MASTER_SERVICE_CONNECTION_MULTI, 4);
});

test('notify message: struct notify_message { int message; pid_t service_pid; } little-endian bytes', (t) => {
  const b = encodeNotifyMessage(MASTER_SERVICE_CONNECTION, 0x01020304, 'LE');
  t.is(b.length, NOTIFY_MESSAGE_SIZE);
  t.deepEqual([...b], [3, 0, 0, 0, 4, 3, 2, 1]);
  t.deepEqual([...encodeNotifyMessage(MASTER_SERVICE_UNAVAILABLE, 258, 'BE')], [0, 0, 0, 2, 0, 0, 1, 2]);
});

test('notify message: encode/decode round trip for every code, pid and byte order', (t) => {
  fc.assert(
    fc.property(
      fc.constantFrom(MASTER_SERVICE_AVAILABLE, MASTER_SERVICE_UNAVAILABLE, MASTER_SERVICE_CONNECTION, MASTER_SERVICE_CONNECTION_MULTI),
      fc.integer({ min: 1, max: 0x7fffffff }),
      fc.constantFrom<'LE' | 'BE'>('LE', 'BE'),
      (message, pid, order) => {
        const d = decodeNotifyMessage(encodeNotifyMessage(message, pid, order), order);
        return d.message === message && d.pid === pid;
      },
    ),
  );
  t.pass();
});

test('notify message: the native byte order is the default (master reads a C struct)', (t) => {
  const b = encodeNotifyMessage(MASTER_SERVICE_AVAILABLE, 4242);
  const d = decodeNotifyMessage(b);
  t.deepEqual(d, { message: 1, pid: 4242 });
  t.throws(() => decodeNotifyMessage(Buffer.alloc(7)), { instanceOf: RangeError });
  t.is(messageName(3), 'CONNECTION');
  t.is(messageName(9), '0x9');
});

function probe(kinds: Record<number, 'fifo' | 'socket' | 'other' | null>, listening: Record<number, boolean> = {}): FdProbe {
  return { kind: (fd) => kinds[fd] ?? null, listening: (fd) => listening[fd] ?? false };
}

test('mode detection: a pipe on fd 3 and a listening socket on fd 4 is master', (t) => {
  t.is(detectFrontEnd(probe({ 3: 'fifo', 4: 'socket' }, { 4: true })), 'master');
  t.is(detectFrontEnd(probe({ 3: 'socket', 4: 'socket' }, { 4: true })), 'master');
});

test('mode detection: anything else is one session on stdin/stdout', (t) => {
  // Node's own descriptors (epoll, internal pipes) sit on 3 and 4 when nothing was inherited.
  t.is(detectFrontEnd(probe({ 3: 'other', 4: 'fifo' })), 'stdio');
  t.is(detectFrontEnd(probe({})), 'stdio');
  t.is(detectFrontEnd(probe({ 3: 'fifo' })), 'stdio');
  t.is(detectFrontEnd(probe({ 3: 'fifo', 4: 'other' })), 'stdio');
  // a connected (not listening) socket on fd 4
  t.is(detectFrontEnd(probe({ 3: 'fifo', 4: 'socket' }, { 4: false })), 'stdio');
  t.is(detectFrontEnd(probe({ 3: 'other', 4: 'socket' }, { 4: true })), 'stdio');
});

test('mode detection on this process (nothing inherited on 3 and 4): stdio', (t) => {
  t.is(detectFrontEnd(), 'stdio');
});

test('reuse timeout: T + rand() % T as service.c, 0 disables', (t) => {
  t.is(reuseTimeoutSeconds(0, () => 0.5), 0);
  t.is(reuseTimeoutSeconds(60, () => 0), 60);
  t.is(reuseTimeoutSeconds(60, () => 0.999999), 119);
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 100000 }), fc.double({ min: 0, max: 0.9999999, noNaN: true }), (T, r) => {
      const v = reuseTimeoutSeconds(T, () => r);
      return Number.isInteger(v) && v >= T && v < 2 * T;
    }),
  );
});
