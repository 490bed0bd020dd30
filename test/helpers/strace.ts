/**
 * Parser for `strace -f -o FILE` output: one Call per system call, with the
 * line numbers of its entry and of its return, so tests can check that one
 * call returned before another began (with -f, a call that blocks in one
 * thread prints `<unfinished ...>` and later `<... name resumed>`).
 */
export interface Call {
  pid: number;
  name: string;
  /** argument text (entry part and resumed part joined) */
  args: string;
  /** return value text ('?' when the process ended inside the call) */
  ret: string;
  /** line number of the entry */
  entry: number;
  /** line number of the return */
  exit: number;
}

const FULL = /^(\d+)\s+(\w+)\((.*)\)\s+=\s+(.*)$/;
const UNFINISHED = /^(\d+)\s+(\w+)\((.*?)\s*<unfinished \.\.\.>$/;
const RESUMED = /^(\d+)\s+<\.\.\. (\w+) resumed>(.*)\)\s+=\s+(.*)$/;

export function parseStrace(text: string): Call[] {
  const calls: Call[] = [];
  const open = new Map<string, Call>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    let m = UNFINISHED.exec(line);
    if (m) {
      const c: Call = { pid: Number(m[1]), name: m[2]!, args: m[3]!, ret: '?', entry: i, exit: Number.MAX_SAFE_INTEGER };
      open.set(`${c.pid} ${c.name}`, c);
      calls.push(c);
      continue;
    }
    m = RESUMED.exec(line);
    if (m) {
      const c = open.get(`${m[1]} ${m[2]}`);
      if (c) {
        open.delete(`${m[1]} ${m[2]}`);
        c.args += m[3]!;
        c.ret = m[4]!;
        c.exit = i;
      }
      continue;
    }
    m = FULL.exec(line);
    if (m) calls.push({ pid: Number(m[1]), name: m[2]!, args: m[3]!, ret: m[4]!, entry: i, exit: i });
  }
  return calls;
}
