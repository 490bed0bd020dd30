/**
 * `cyrsync/transforms` as other projects get it: the package is built into a
 * temp directory, packed with `npm pack`, and installed from the tarball into
 * a temp consumer project (install scripts off: the native addons are not
 * needed to frame IMAP). There it must
 * - import by name from plain JavaScript and frame a line with a literal;
 * - type-check a TypeScript file that uses its types (and reject a wrong one,
 *   so the types are really there, not `any`);
 * - run the README's example verbatim, which must survive a peer that goes
 *   away in the middle of a literal (FIN and RST) and refuse an oversized
 *   synchronizing literal without dropping the connection.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

/** The environment without the variables an outer `npm test` sets (npm_config_local_prefix would aim npm at this repo). */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.toLowerCase().startsWith('npm_')) env[k] = v;
  return { ...env, ...extra };
}

/** The README block between the transforms-example markers, fences removed. */
function readmeExample(): string {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const m = /<!-- transforms-example:start -->\n```ts\n([\s\S]*?)```\n<!-- transforms-example:end -->/.exec(readme);
  if (m === null) throw new Error('README has no transforms example between its markers');
  return m[1]!;
}

/** Build, pack and install the package into a consumer project; returns that project's directory. */
async function installPacked(t: ExecutionContext, tmp: string): Promise<string> {
  const pkg = join(tmp, 'pkg');
  mkdirSync(pkg);
  await run(process.execPath, [TSC, '-p', join(ROOT, 'tsconfig.json'), '--outDir', join(pkg, 'dist')], { cwd: ROOT });
  for (const f of ['package.json', 'README.md']) cpSync(join(ROOT, f), join(pkg, f));
  const packed = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], { cwd: pkg, env: cleanEnv() });
  const [info] = JSON.parse(packed.stdout) as { filename: string }[];
  const tarball = join(tmp, info!.filename);
  t.log(`packed ${info!.filename}`);
  const proj = join(tmp, 'consumer');
  mkdirSync(proj);
  writeFileSync(join(proj, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  await run('npm', ['install', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', '--no-package-lock', tarball],
    { cwd: proj, env: cleanEnv() });
  // Types of node for the consumer's compiler, from this repository's install.
  writeFileSync(join(proj, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, outDir: 'out',
      types: ['node'], typeRoots: [join(ROOT, 'node_modules', '@types')], skipLibCheck: true,
    },
  }));
  return proj;
}

const USE_JS = `import { Framer, FramerCore, FramingError, DEFAULT_LIMITS } from 'cyrsync/transforms';
const seen = [];
const core = new FramerCore({
  onSegment: (text, literal) => void seen.push([text.toString('latin1'), literal && literal.size]),
  onBodyData: (chunk) => void seen.push(chunk.toString('latin1')),
  onBodyEnd: () => undefined,
});
core.push(Buffer.from('a1 APPEND box {5}\\r\\nhello\\r\\n'));
core.end();
console.log(JSON.stringify({ seen, framer: typeof Framer, error: new FramingError('IMAP_PROTOCOL_ERROR', 'x').code, max: DEFAULT_LIMITS.maxLiteralSize }));
`;

const CHECK_TS = `import { Framer, type LiteralHeader, type LiteralBody, type FramerHandler, type Limits } from 'cyrsync/transforms';
const limits: Partial<Limits> = { maxLiteralSize: 10 };
const handler: FramerHandler = {
  onSegment: (text: Buffer, literal: LiteralHeader | null, raw: Buffer) => (literal?.tooLarge ? 'reject' : undefined),
  onBodyData: (chunk: Buffer) => chunk.length > 0,
  onBodyEnd: () => undefined,
};
const framer = new Framer({ limits, onLiteral: (h: LiteralHeader) => (h.size > 5 ? 'skip' : undefined) });
framer.on('literal', (_h: LiteralHeader, body: LiteralBody) => body.skip());
export { handler, framer };
`;

const BAD_TS = `import type { LiteralHeader } from 'cyrsync/transforms';
export const h: LiteralHeader = { kind: 'bogus', size: '5', nonSynchronizing: false, binary: false };
`;

test('packed cyrsync/transforms: import by name from JS, types for TS, the README example survives a peer gone mid-literal', async (t) => {
  const tmp = mkdtempSync(join(tmpdir(), 'cyrsync-pack-'));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
  const proj = await installPacked(t, tmp);

  writeFileSync(join(proj, 'use.mjs'), USE_JS);
  const used = await run(process.execPath, ['use.mjs'], { cwd: proj });
  t.deepEqual(JSON.parse(used.stdout), {
    seen: [['a1 APPEND box ', 5], 'hello', ['', null]],
    framer: 'function',
    error: 'IMAP_PROTOCOL_ERROR',
    max: 2 ** 31 - 1,
  });

  // check.ts and the README example, as written there, compiled against the packed types.
  writeFileSync(join(proj, 'check.ts'), CHECK_TS);
  writeFileSync(join(proj, 'example.ts'), readmeExample());
  await t.notThrowsAsync(run(process.execPath, [TSC, '-p', '.'], { cwd: proj }));
  writeFileSync(join(proj, 'bad.ts'), BAD_TS);
  const bad = await run(process.execPath, [TSC, '--noEmit', '-p', '.'], { cwd: proj }).then(() => null, (e: { stdout: string }) => e.stdout);
  t.truthy(bad, 'a wrong LiteralHeader must not type-check');
  t.regex(bad ?? '', /bad\.ts.*error TS2322/);
  await readmeExampleSurvives(t, proj);
});

/** Lines the child prints, and a wait for one matching `rx`. */
class Output {
  text = '';
  private waiters: (() => void)[] = [];
  constructor(child: ChildProcess) {
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      this.text += s;
      for (const w of this.waiters.splice(0)) w();
    });
  }
  async wait(rx: RegExp, child: ChildProcess): Promise<RegExpExecArray> {
    for (;;) {
      const m = rx.exec(this.text);
      if (m !== null) return m;
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`example exited; it printed:\n${this.text}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        child.once('exit', () => resolve());
      });
    }
  }
}

/** A client that reads reply lines. */
async function client(t: ExecutionContext, port: number): Promise<{ sock: Socket; reply: (rx: RegExp) => Promise<string> }> {
  const sock = connect(port, '127.0.0.1');
  t.teardown(() => void sock.destroy());
  sock.on('error', () => undefined);
  await once(sock, 'connect');
  let got = '';
  sock.setEncoding('latin1').on('data', (s: string) => (got += s));
  const reply = async (rx: RegExp): Promise<string> => {
    for (;;) {
      const m = rx.exec(got);
      if (m !== null) {
        got = got.slice(m.index + m[0].length);
        return m[0];
      }
      await Promise.race([once(sock, 'data'), once(sock, 'close').then(() => {
        throw new Error(`connection closed; got ${JSON.stringify(got)}`);
      })]);
    }
  };
  return { sock, reply };
}

async function readmeExampleSurvives(t: ExecutionContext, proj: string): Promise<void> {
  const child = spawn(process.execPath, ['out/example.js'], { cwd: proj, env: cleanEnv({ PORT: '0' }), stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => void child.kill('SIGKILL'));
  const out = new Output(child);
  const port = Number((await out.wait(/port: (\d+)/, child))[1]);

  // An oversized synchronizing literal is refused; the connection goes on.
  const a = await client(t, port);
  a.sock.write('a1 APPEND box {5000000000}\r\n');
  t.is(await a.reply(/^.*\r\n/), 'a1 NO [TOOBIG] literal too large\r\n');
  a.sock.write('a2 APPEND box {10}\r\n');
  t.is(await a.reply(/^.*\r\n/), '+ go ahead\r\n');
  a.sock.end('0123');                                        // FIN after 4 of 10 octets
  await out.wait(/literal cut short: Unexpected end of data/, child);

  const b = await client(t, port);
  b.sock.write('b1 APPEND box {10}\r\n');
  await b.reply(/^\+ go ahead\r\n/);
  b.sock.write('0123');
  b.sock.resetAndDestroy();                                  // RST in the middle of the literal
  await out.wait(/literal cut short[\s\S]*literal cut short: /, child);

  // Still serving.
  const c = await client(t, port);
  c.sock.write('c1 APPEND box {5}\r\n');
  await c.reply(/^\+ go ahead\r\n/);
  c.sock.write('hello\r\n');
  t.is(await c.reply(/^.*\r\n/), 'c1 OK done\r\n');
  await out.wait(/literal of 5 octets, sha1 aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d/, child);
  t.is(child.exitCode, null);
  t.is(child.signalCode, null);
}
