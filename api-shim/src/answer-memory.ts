/**
 * The memory that non-streamed answers may hold at once, across requests.
 *
 * A non-streamed answer is read whole before it is sent, because its headers carry the charge
 * (answer-body.ts). Each may be up to SHIM_MAX_ANSWER_BYTES, and nothing else bounds how many are
 * read at once: parallel batches of embeddings could take the process past its memory. So the
 * bytes held are counted here, and a read that would go past the budget waits for bytes to be
 * given back (the upstream's answer waits in its socket meanwhile: vLLM has already done the
 * work, and nothing is refused or charged differently).
 *
 * Nobody waits on others for long, so no client can hold everyone else's answers up:
 * - an answer's first FREE_BYTES never wait: ordinary answers (a chat reply) are never delayed;
 * - one reader at a time may go past the budget (the "overdraft"), so readers that each hold
 *   part of it cannot wait on each other; it is handed on when that answer is read;
 * - an answer read but not yet sent (a slow client; nginx does not buffer answers) still holds
 *   its bytes, and while such answers hold the whole budget the overdraft is not given;
 * - and no read waits more than MAX_WAIT_MS in all: then it goes on past the budget.
 * So the budget is what bursts of large answers are smoothed to, and what clients that take
 * their answers slowly can push memory past for a while (each sent answer has an idle timeout).
 */
export const FREE_BYTES = 1024 * 1024;
export const MAX_WAIT_MS = 2000;

export class AnswerMemory {
  readonly limit: number;
  /** Bytes held by every lease. */
  private used = 0;
  /** Of those, bytes of answers read and waiting to be sent. */
  private unsent = 0;
  private overdraft: AnswerLease | null = null;
  private readonly waiting: (() => void)[] = [];
  /** Reads that had to wait for room, since the start (a budget too small shows here). */
  waits = 0;

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Bytes held now by answers being read or sent. */
  get inUse(): number {
    return this.used;
  }

  lease(): AnswerLease {
    return new AnswerLease(this);
  }

  /** Takes `n` more bytes for `lease`, which holds `held`, if it may now (`force`: it waited long enough); false when it must wait. */
  tryTake(lease: AnswerLease, held: number, n: number, force: boolean): boolean {
    if (held + n > FREE_BYTES && this.used + n > this.limit && this.overdraft !== lease && !force) {
      if (this.overdraft !== null || this.unsent > this.limit) return false;
      this.overdraft = lease;
    }
    this.used += n;
    return true;
  }

  /** Resolves when there may be room, or after `ms`: then try again. */
  changed(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.waiting.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** `lease` read its answer: its `held` bytes now wait to be sent, and the overdraft is free. */
  readDone(lease: AnswerLease, held: number): void {
    this.unsent += held;
    if (this.overdraft === lease) this.overdraft = null;
    this.wake();
  }

  /** Gives back `n` bytes of `lease`, read (`wasRead`: waiting to be sent) or not. */
  give(lease: AnswerLease, n: number, wasRead: boolean): void {
    this.used -= n;
    if (wasRead) this.unsent -= n;
    if (this.overdraft === lease) this.overdraft = null;
    this.wake();
  }

  private wake(): void {
    for (const wake of this.waiting.splice(0)) wake();
  }
}

/** One answer's account: what it takes is given back by `release`, once the answer is sent or dropped. */
export class AnswerLease {
  private readonly memory: AnswerMemory;
  private held = 0;
  private read = false;
  private released = false;
  /** Set at its first wait: past it, this answer waits no more. */
  private waitUntil: number | undefined;

  constructor(memory: AnswerMemory) {
    this.memory = memory;
  }

  get holding(): boolean {
    return this.held > 0;
  }

  /** Takes `n` more bytes if there is room now (the usual case: no wait, no promise). */
  takeNow(n: number, force = false): boolean {
    if (this.released) return true; // dropped: nothing is counted any more
    if (!this.memory.tryTake(this, this.held, n, force)) return false;
    this.held += n;
    return true;
  }

  /** Takes `n` more bytes, waiting while there is no room: MAX_WAIT_MS at most over the whole answer. */
  async take(n: number): Promise<void> {
    if (this.waitUntil === undefined) {
      this.memory.waits++;
      this.waitUntil = performance.now() + MAX_WAIT_MS; // monotonic: a clock stepped back must not stretch it
    }
    for (;;) {
      const left = this.waitUntil - performance.now();
      if (this.takeNow(n, left <= 0)) return;
      await this.memory.changed(left);
    }
  }

  /** Gives back bytes dropped while reading (an answer past the largest relayed). */
  drop(n: number): void {
    if (this.released) return; // given back already
    const given = Math.min(n, this.held);
    this.held -= given;
    this.memory.give(this, given, false);
  }

  /** The answer is read (or its read failed): another reader may have the overdraft. */
  readDone(): void {
    if (this.read || this.released) return;
    this.read = true;
    this.memory.readDone(this, this.held);
  }

  /** Gives everything back: the answer was sent, or dropped. Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    const n = this.held;
    this.held = 0;
    this.memory.give(this, n, this.read);
  }
}
