// Long-running commands (builds, npm installs) run asynchronously, so the vitest worker's event
// loop keeps answering its runner while they take their minute.
import { execFile, type ExecFileOptions } from 'node:child_process';

export function run(command: string, args: string[], options: ExecFileOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...options }, (error, stdout, stderr) => {
      // The failure keeps what the command printed.
      const failure: (Error & { stdout: string; stderr: string }) | undefined = error ? Object.assign(error, { stdout: String(stdout), stderr: String(stderr) }) : undefined;
      if (failure) reject(failure);
      else resolve(String(stdout));
    });
  });
}
