/**
 * Password checks through the system's Cyrus SASL library (libsasl2, bound
 * with koffi), so that the users a Cyrus installation already has — its
 * sasldb (`sasl_auxprop_plugin: sasldb`, `sasl_sasldb_path`) or any other
 * auxprop plugin — can log in unchanged.
 *
 * The connection is set up as sync_server sets up its own: service `csync`,
 * server name = `servername`, no user realm (so sasldb looks users up in the
 * realm `servername`). SASL options come from imapd.conf exactly as Cyrus
 * hands them over (imap/global.c mysasl_config): option `X` of plugin `P`
 * is `sasl_P_X`, else `sasl_X`. `pwcheck_method` is pinned to `auxprop`
 * here; saslauthd is reached through cyrsync's own client.
 *
 * sasl_checkpass runs on a worker thread (koffi async call) so a slow
 * plugin does not stall other connections; calls are serialised because
 * libsasl2 connections share global plugin state.
 */
import { createRequire } from 'node:module';

/** libsasl2 result codes used here (sasl.h). */
export const SASL_OK = 0;
export const SASL_BADAUTH = -13;
export const SASL_NOUSER = -20;

export interface CyrusSaslResult {
  /** The libsasl2 code. */
  code: number;
  /** sasl_errstring(code): the text Cyrus puts after `NO `. */
  text: string;
  /** sasl_errdetail(conn), for the log. */
  detail: string;
}

export interface CyrusSasl {
  /**
   * Check `user`/`password` with the auxprop plugins. `option(name)` returns
   * the raw imapd.conf value of `name` (e.g. `sasl_sasldb_path`) or undefined.
   */
  checkpass(servername: string, option: (name: string) => string | undefined, user: string, password: Buffer): Promise<CyrusSaslResult>;
}

type KoffiModule = typeof import('koffi');

let loaded: CyrusSasl | null | undefined;
let loadError = '';

/** Why loadCyrusSasl() returned null ('' when it did not). */
export function cyrusSaslLoadError(): string {
  return loadError;
}

/** Bind libsasl2 once per process; null when it is not installed or cannot be initialised. */
export function loadCyrusSasl(): CyrusSasl | null {
  if (loaded !== undefined) return loaded;
  try {
    loaded = bind(createRequire(import.meta.url)('koffi') as KoffiModule);
  } catch (err) {
    loadError = err instanceof Error ? err.message : String(err);
    loaded = null;
  }
  return loaded;
}

/** A libsasl2 function bound with koffi (callable, with `.async` for a worker thread). */
type NativeFunction = ReturnType<import('koffi').LibraryHandle['func']>;

/** The libsasl2 functions used here. */
interface SaslFunctions {
  serverInit: NativeFunction;
  serverNew: NativeFunction;
  checkpass: NativeFunction;
  dispose: NativeFunction;
  errstring: NativeFunction;
  errdetail: NativeFunction;
}

function bind(koffi: KoffiModule): CyrusSasl {
  const sasl = declareFunctions(koffi, koffi.load('libsasl2.so.2'));
  const { callbacks, useOptions } = saslCallbacks(koffi);
  const rc = sasl.serverInit(callbacks, 'cyrsync') as number;
  if (rc !== SASL_OK) throw new Error(`sasl_server_init failed: ${sasl.errstring(rc, null, null) as string}`);
  let queue: Promise<unknown> = Promise.resolve();
  return {
    checkpass(servername, option, user, password) {
      const p = queue.then(() => {
        useOptions(option);
        return checkOnce(koffi, sasl, callbacks, servername, user, password);
      });
      queue = p.catch(() => undefined);
      return p;
    },
  };
}

function declareFunctions(koffi: KoffiModule, lib: import('koffi').LibraryHandle): SaslFunctions {
  // The callback array's element type, named in the prototypes below.
  koffi.struct('cyrsync_sasl_callback_t', { id: 'unsigned long', proc: 'void *', context: 'void *' });
  return {
    serverInit: lib.func('int sasl_server_init(const cyrsync_sasl_callback_t *callbacks, const char *appname)'),
    serverNew: lib.func(
      'int sasl_server_new(const char *service, const char *serverFQDN, const char *user_realm, const char *iplocalport, const char *ipremoteport, const cyrsync_sasl_callback_t *callbacks, unsigned int flags, _Out_ void **pconn)',
    ),
    checkpass: lib.func('int sasl_checkpass(void *conn, void *user, unsigned int userlen, void *pass, unsigned int passlen)'),
    dispose: lib.func('void sasl_dispose(_Inout_ void **pconn)'),
    errstring: lib.func('const char *sasl_errstring(int code, const char *langlist, void *outlang)'),
    errdetail: lib.func('const char *sasl_errdetail(void *conn)'),
  };
}

/**
 * The callbacks handed to libsasl2: getopt answers from the imapd.conf
 * options of the check in progress (`useOptions`), the log callback drops
 * the plugins' own lines (the default would go to syslog).
 */
function saslCallbacks(koffi: KoffiModule): { callbacks: unknown[]; useOptions: (option: (name: string) => string | undefined) => void } {
  const GetoptProto = koffi.proto('int cyrsync_sasl_getopt_t(void *context, const char *plugin_name, const char *option, void *result, void *len)');
  const LogProto = koffi.proto('int cyrsync_sasl_log_t(void *context, int level, const char *message)');
  // A pointer slot written as an integer of pointer size (koffi.alloc returns addresses).
  const PTR = koffi.sizeof('void *') === 8 ? 'uint64_t' : 'uint32_t';
  const cstr = nativeStrings(koffi);
  let currentOption: (name: string) => string | undefined = () => undefined;
  const getopt = koffi.register(
    (_ctx: unknown, plugin: string | null, option: string, result: unknown, len: unknown): number => {
      let v: string | undefined;
      if (option === 'pwcheck_method') v = 'auxprop';
      else if (option === 'log_level') v = '0';
      else {
        if (plugin) v = currentOption(`sasl_${plugin}_${option}`);
        if (v === undefined) v = currentOption(`sasl_${option}`);
      }
      if (v === undefined) return -1; // SASL_FAIL: not configured
      koffi.encode(result, PTR, cstr(v));
      if (len) koffi.encode(len, 'unsigned int', Buffer.byteLength(v));
      return SASL_OK;
    },
    koffi.pointer(GetoptProto),
  );
  const log = koffi.register((): number => SASL_OK, koffi.pointer(LogProto));
  const callbacks = [
    { id: 1, proc: getopt, context: null },
    { id: 2, proc: log, context: null },
    { id: 0, proc: null, context: null },
  ];
  return {
    callbacks,
    useOptions: (option) => {
      currentOption = option;
    },
  };
}

/**
 * Option values handed to libsasl2 must stay valid after the callback
 * returns: each distinct value is copied once into native memory and kept.
 */
function nativeStrings(koffi: KoffiModule): (s: string) => unknown {
  const strings = new Map<string, unknown>();
  return (s) => {
    let p = strings.get(s);
    if (p === undefined) {
      const b = Buffer.from(s + '\0', 'utf8');
      p = koffi.alloc('uint8_t', b.length);
      koffi.encode(p, koffi.array('uint8_t', b.length), [...b]);
      strings.set(s, p);
    }
    return p;
  };
}

/** A NUL-terminated native copy of `b`; free(true) overwrites it first (passwords). */
function nativeCopy(koffi: KoffiModule, b: Buffer): { ptr: unknown; len: number; free(wipe?: boolean): void } {
  const n = b.length + 1;
  const ptr: unknown = koffi.alloc('uint8_t', n);
  koffi.encode(ptr, koffi.array('uint8_t', n), [...b, 0]);
  return {
    ptr,
    len: b.length,
    free(wipe = false): void {
      if (wipe) koffi.encode(ptr, koffi.array('uint8_t', n), new Array<number>(n).fill(0));
      koffi.free(ptr);
    },
  };
}

/** One sasl_checkpass on a connection of its own, on a worker thread. */
function checkOnce(koffi: KoffiModule, sasl: SaslFunctions, callbacks: unknown[], servername: string, user: string, password: Buffer): Promise<CyrusSaslResult> {
  return new Promise((resolve) => {
    const pconn: unknown[] = [null];
    const made = sasl.serverNew('csync', servername, null, null, null, callbacks, 0, pconn) as number;
    if (made !== SASL_OK) {
      resolve({ code: made, text: sasl.errstring(made, null, null) as string, detail: 'sasl_server_new failed' });
      return;
    }
    const conn = pconn[0];
    // The worker thread reads user and password from native copies that live until the call ends.
    const u = nativeCopy(koffi, Buffer.from(user, 'utf8'));
    const p = nativeCopy(koffi, password);
    sasl.checkpass.async(conn, u.ptr, u.len, p.ptr, p.len, (err: unknown, code: number) => {
      const c = err ? -1 : code;
      const detail = err ? (err instanceof Error ? String(err) : JSON.stringify(err)) : ((sasl.errdetail(conn) as string | null) ?? '');
      sasl.dispose([conn]);
      u.free();
      p.free(true);
      resolve({ code: c, text: sasl.errstring(c, null, null) as string, detail });
    });
  });
}
