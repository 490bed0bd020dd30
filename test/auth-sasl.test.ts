import test from 'ava';
import fc from 'fast-check';
import {
  MAX_SASL_RESPONSE,
  challengeLine,
  createSaslExchange,
  isAtom,
  pausesAfterFailure,
  saslDecode64,
  successReply,
  type SaslStep,
} from '../src/server/auth/sasl.js';

const b64 = (s: string | Buffer): string => Buffer.from(s).toString('base64');

function expectDone(t: import('ava').ExecutionContext, step: SaslStep): { authcid: string; authzid: string; password: string; mechanism: string } {
  if (!('done' in step)) {
    t.fail(`expected done, got ${JSON.stringify(step)}`);
    throw new Error('unreachable');
  }
  return { ...step.done, password: step.done.password.toString('utf8') };
}

function expectChallenge(t: import('ava').ExecutionContext, step: SaslStep): string {
  if (!('challenge' in step)) {
    t.fail(`expected a challenge, got ${JSON.stringify(step)}`);
    throw new Error('unreachable');
  }
  return step.challenge.toString('utf8');
}

function expectReply(t: import('ava').ExecutionContext, step: SaslStep): string {
  if (!('error' in step)) {
    t.fail(`expected an error reply, got ${JSON.stringify(step)}`);
    throw new Error('unreachable');
  }
  return step.error.reply;
}

test('PLAIN with initial response', (t) => {
  const ex = createSaslExchange('PLAIN', b64('\0admin\0adminpw'));
  t.deepEqual(expectDone(t, ex.first), { mechanism: 'PLAIN', authzid: '', authcid: 'admin', password: 'adminpw' });
  t.throws(() => ex.respond('x'));
});

test('PLAIN with authzid and mechanism in lower case', (t) => {
  const ex = createSaslExchange('plain', b64('admin\0admin\0pw'));
  t.is(ex.mechanism, 'PLAIN');
  t.deepEqual(expectDone(t, ex.first), { mechanism: 'PLAIN', authzid: 'admin', authcid: 'admin', password: 'pw' });
});

test('PLAIN without initial response gets an empty challenge', (t) => {
  const ex = createSaslExchange('PLAIN', null);
  t.is(expectChallenge(t, ex.first), '');
  t.is(challengeLine(Buffer.alloc(0)), '+ ');
  t.deepEqual(expectDone(t, ex.respond(b64('\0u\0p') + '\r')), { mechanism: 'PLAIN', authzid: '', authcid: 'u', password: 'p' });
});

/**
 * PLAIN exchanges and the real sync_server's reply: [initial response (null:
 * none), client response to the challenge (absent: none), reply].
 */
const PLAIN_REPLIES: [string | null, string | undefined, string][] = [
  ['=', undefined, 'NO bad protocol / cancel'],
  ['!!!!', undefined, 'NO bad protocol / cancel'],
  [b64('admin'), undefined, 'NO bad protocol / cancel'],
  [b64('\0admin'), undefined, 'NO bad protocol / cancel'],
  [b64('\0admin\0pw\0'), undefined, 'NO bad protocol / cancel'],
  [null, '*', 'BAD Client canceled authentication'],
  [null, '*xyz', 'BAD Client canceled authentication'],
  [null, '!!!!', 'NO bad protocol / cancel'],
  [null, 'AAB', 'NO another step is needed in authentication'],
  [null, '', 'NO bad protocol / cancel'],
  [null, 'AGFkbWluAGFk bWlucHc=', 'NO bad protocol / cancel'],
  [null, 'AGFkbWluAGFkbWlucHc=AAAA', 'NO bad protocol / cancel'],
  // An incomplete initial response: Cyrus sends an empty challenge first.
  ['AAB', 'xx', 'NO another step is needed in authentication'],
  ['AAB', '*', 'BAD Client canceled authentication'],
  ['AAB', b64('\0admin\0adminpw'), 'NO bad protocol / cancel'],
];

test('PLAIN replies match the real sync_server', (t) => {
  for (const [initial, response, reply] of PLAIN_REPLIES) {
    const ex = createSaslExchange('PLAIN', initial);
    const what = JSON.stringify([initial, response]);
    if (response === undefined) {
      t.is(expectReply(t, ex.first), reply, what);
      continue;
    }
    t.is(expectChallenge(t, ex.first), '', what);
    t.is(expectReply(t, ex.respond(response)), reply, what);
  }
  // Empty password parses; verification refuses it.
  t.deepEqual(expectDone(t, createSaslExchange('PLAIN', b64('\0admin\0')).first).password, '');
});

test('LOGIN asks Username: then Password:, base64-encoded', (t) => {
  const ex = createSaslExchange('LOGIN');
  if (!('challenge' in ex.first)) return t.fail();
  t.is(challengeLine(ex.first.challenge), '+ VXNlcm5hbWU6');
  const s2 = ex.respond(b64('admin'));
  if (!('challenge' in s2)) return t.fail();
  t.is(challengeLine(s2.challenge), '+ UGFzc3dvcmQ6');
  t.deepEqual(expectDone(t, ex.respond(b64('adminpw'))), { mechanism: 'LOGIN', authzid: '', authcid: 'admin', password: 'adminpw' });
});

test('LOGIN with an initial response skips the Username: challenge; = does not', (t) => {
  let ex = createSaslExchange('login', b64('admin'));
  t.is(expectChallenge(t, ex.first), 'Password:');
  t.deepEqual(expectDone(t, ex.respond(b64('pw'))).authcid, 'admin');
  ex = createSaslExchange('LOGIN', '=');
  t.is(expectChallenge(t, ex.first), 'Username:');
  t.is(expectChallenge(t, ex.respond(b64('admin'))), 'Password:');
  t.is(expectDone(t, ex.respond(b64('pw'))).password, 'pw');
  ex = createSaslExchange('LOGIN');
  t.is(expectChallenge(t, ex.respond('')), 'Password:');
  t.is(expectDone(t, ex.respond(b64('pw'))).authcid, '');
  ex = createSaslExchange('LOGIN', b64('x'.repeat(1025)));
  t.is(expectReply(t, ex.first), 'NO bad protocol / cancel');
  ex = createSaslExchange('LOGIN', b64('u'));
  t.is(expectReply(t, ex.respond('*')), 'BAD Client canceled authentication');
});

test('mechanism checks', (t) => {
  t.is(expectReply(t, createSaslExchange('CRAM-MD5').first), 'NO no mechanism available');
  t.is(expectReply(t, createSaslExchange('PL%AIN').first), 'BAD Invalid mechanism');
  t.is(expectReply(t, createSaslExchange('PLAIN', b64('\0a\0b'), { mechanisms: [] }).first), 'NO no mechanism available');
  t.is(expectReply(t, createSaslExchange('LOGIN', null, { mechanisms: ['PLAIN'] }).first), 'NO no mechanism available');
  t.true('done' in createSaslExchange('plain', b64('\0a\0b'), { mechanisms: ['PLAIN'] }).first);
  t.true(isAtom('PLAIN'));
  t.false(isAtom(''));
  t.false(isAtom('a*'));
  t.false(isAtom('a\x01'));
  t.false(isAtom('é'));
});

test('overlong response line', (t) => {
  const ex = createSaslExchange('PLAIN');
  t.is(expectReply(t, ex.respond('A'.repeat(MAX_SASL_RESPONSE + 4))), 'NO Error reading client response: line too long');
});

test('success lines', (t) => {
  t.is(successReply(false), 'OK Success (no protection)');
  t.is(successReply(true), 'OK Success (tls protection)');
});

test('saslDecode64 agrees with Buffer base64 on canonical input', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      const enc = Buffer.from(bytes).toString('base64');
      const d = saslDecode64(enc);
      return 'ok' in d && d.ok.equals(Buffer.from(bytes));
    }),
  );
  t.deepEqual(saslDecode64('\rAAAA'), { fail: 'fail' });
});

test('PLAIN round-trips any NUL-free identities and passwords', (t) => {
  const part = fc.string({ maxLength: 40 }).filter((s) => !s.includes('\0'));
  fc.assert(
    fc.property(part, part, part, (z, c, p) => {
      const step = createSaslExchange('PLAIN', b64(`${z}\0${c}\0${p}`)).first;
      return 'done' in step && step.done.authzid === z && step.done.authcid === c && step.done.password.toString('utf8') === p;
    }),
  );
  t.pass();
});

test('arbitrary client lines never throw and always end or continue', (t) => {
  fc.assert(
    fc.property(fc.constantFrom('PLAIN', 'LOGIN'), fc.option(fc.string({ maxLength: 30 })), fc.array(fc.string({ maxLength: 40 }), { maxLength: 4 }), (mech, init, lines) => {
      const ex = createSaslExchange(mech, init);
      let step = ex.first;
      for (const l of lines) {
        if (!('challenge' in step)) break;
        step = ex.respond(l);
      }
      return 'challenge' in step || 'done' in step || /^(NO|BAD) /.test(step.error.reply);
    }),
  );
  t.pass();
});

test('failed-login pause applies to NO replies of a failed exchange only', (t) => {
  t.true(pausesAfterFailure('NO authentication failure'));
  t.true(pausesAfterFailure('NO no mechanism available'));
  t.true(pausesAfterFailure('NO bad protocol / cancel'));
  t.false(pausesAfterFailure('BAD Client canceled authentication'));
  t.false(pausesAfterFailure('BAD Invalid mechanism'));
  t.false(pausesAfterFailure('NO Error reading client response: line too long'));
});
