/** Authentication: SASL PLAIN/LOGIN exchange, password verifiers, password file, administrators. */
export * from './sasl.js';
export * from './saslauthd.js';
export * from './passwd.js';
export * from './verify.js';
export * from './cyrus-sasl.js';
