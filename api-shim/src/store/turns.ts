/** Turns for work that must not all run at once (usage reports): the stores share them. */
import { ReportsBusyError } from "./store.ts";

/**
 * At most `limit` tasks at once; up to `maxWaiting` others wait in order, and more are refused
 * (a ReportsBusyError of `scope`: a key's own line, or the turns the whole shim shares).
 */
export class Turns {
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  private readonly limit: number;
  private readonly maxWaiting: number;
  private readonly scope: "line" | "shim";
  constructor(limit: number, maxWaiting: number, scope: "line" | "shim" = "shim") {
    this.limit = limit;
    this.maxWaiting = maxWaiting;
    this.scope = scope;
  }

  /** Runs `task` in its turn; one still waiting when `signal` aborts (its asker left) gives up its place. */
  async run<T>(task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (this.running >= this.limit) {
      if (this.waiting.length >= this.maxWaiting) throw new ReportsBusyError(this.scope, this.limit, this.maxWaiting);
      signal?.throwIfAborted();
      await new Promise<void>((resolve, reject) => {
        const leave = () => {
          this.waiting.splice(this.waiting.indexOf(turn), 1);
          reject(signal!.reason);
        };
        const turn = () => {
          signal?.removeEventListener("abort", leave);
          resolve();
        };
        this.waiting.push(turn);
        signal?.addEventListener("abort", leave, { once: true });
      });
    } else {
      this.running++;
    }
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next(); // the turn passes on: running stays the same
      else this.running--;
    }
  }
}

/**
 * A line of Turns(1, maxWaiting) per key: each key's tasks run one at a time, in order, and a
 * key's line is dropped once it has nothing waiting or running. The stores' usage reports take
 * turns by key with it, so a key asking in a loop waits behind itself, not in front of others.
 */
export class KeyedTurns<K> {
  private readonly lines = new Map<K, { turns: Turns; tasks: number }>();
  private readonly maxWaiting: number;
  constructor(maxWaiting: number) {
    this.maxWaiting = maxWaiting;
  }

  /** Runs `task` in its key's line; as Turns.run for one waiting whose `signal` aborts. */
  run<T>(key: K, task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const line = this.lines.get(key) ?? { turns: new Turns(1, this.maxWaiting, "line"), tasks: 0 };
    this.lines.set(key, line);
    line.tasks++;
    return line.turns.run(task, signal).finally(() => --line.tasks === 0 && this.lines.delete(key));
  }
}
