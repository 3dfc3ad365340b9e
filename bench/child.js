// One side of the CPU benchmark in a persistent child process: it takes JSON-line commands on
// stdin and answers one JSON line each on stdout ({"ok": true, ...} or {"ok": false, "error"}), so
// that its start-up cost (importing torch, loading the addon) is paid once. The PyTorch sides run
// bench/bench_torch.py, the package sides bench/package_child.js; both speak the same protocol.
'use strict';

const { spawn } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');

const ROOT = path.resolve(__dirname, '..');

class Child {
  /** `label` names the side in errors; `env` is added to this process's environment. */
  constructor(label, cmd, args, env = {}) {
    this.label = label;
    this.stderrTail = '';
    this.pending = null; // { resolve, reject, cmd, timer }
    this.exited = null;
    this.proc = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stderr.on('data', (d) => {
      this.stderrTail = (this.stderrTail + d).slice(-4000);
    });
    readline.createInterface({ input: this.proc.stdout }).on('line', (line) => this.#onLine(line));
    // A dead child must end the run with a clear error, not a hang.
    this.proc.on('error', (err) => this.#die(`could not run ${cmd} ${args.join(' ')}: ${err.message}`));
    this.proc.on('exit', (code, signal) => this.#die(`the ${label} child (pid ${this.proc.pid}) exited (${signal ? `signal ${signal}` : `code ${code}`})`));
    this.proc.stdin.on('error', (err) => this.#die(`cannot write to the ${label} child: ${err.message}`));
  }

  #onLine(line) {
    const p = this.pending;
    if (!p) return; // nothing asked for: ignore (the protocol never sends unasked lines)
    this.pending = null;
    clearTimeout(p.timer);
    let reply;
    try {
      reply = JSON.parse(line);
    } catch {
      p.reject(new Error(`the ${this.label} child answered ${p.cmd} with a line that is not JSON: ${line.slice(0, 300)}`));
      return;
    }
    if (!reply.ok) p.reject(new Error(`the ${this.label} side failed on ${p.cmd}: ${reply.error}\n${reply.traceback || ''}`));
    else p.resolve(reply);
  }

  #die(why) {
    if (this.exited) return;
    this.exited = why;
    const p = this.pending;
    this.pending = null;
    if (p) {
      clearTimeout(p.timer);
      p.reject(new Error(`${why} while running ${p.cmd}.\nIts stderr ended with:\n${this.stderrTail || '(nothing)'}`));
    }
  }

  request(req, timeoutMs = 300_000) {
    const cmd = JSON.stringify(req);
    if (this.exited) return Promise.reject(new Error(`${this.exited}; cannot run ${cmd}.\nIts stderr ended with:\n${this.stderrTail || '(nothing)'}`));
    if (this.pending) return Promise.reject(new Error(`bench bug: ${cmd} sent while ${this.pending.cmd} is in flight`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending = null;
        this.proc.kill('SIGKILL');
        reject(new Error(`the ${this.label} child did not answer ${cmd} within ${timeoutMs / 1000} s; killed it`));
      }, timeoutMs);
      this.pending = { resolve, reject, cmd, timer };
      this.proc.stdin.write(cmd + '\n');
    });
  }

  async close() {
    if (this.exited) return;
    const gone = new Promise((resolve) => this.proc.once('exit', resolve));
    try {
      await this.request({ cmd: 'quit' }, 30_000);
    } catch {
      /* it is going anyway */
    }
    this.proc.stdin.end();
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
    await gone;
    clearTimeout(timer);
  }

  kill() {
    if (!this.exited) this.proc.kill('SIGKILL');
  }
}

module.exports = { Child };
