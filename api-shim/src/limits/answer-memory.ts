/**
 * The memory that answers may hold at once, across requests: non-streamed answers, and the large
 * events of streamed ones.
 *
 * A non-streamed answer is read whole before it is sent, because its headers carry the charge
 * (answer-body.ts). Each may be up to SHIM_MAX_ANSWER_BYTES, and nothing else bounds how many are
 * read at once: parallel batches of embeddings could take the process past its memory. So the
 * bytes held are counted here, and a read that would go past the budget waits for bytes to be
 * given back (the upstream's answer waits in its socket meanwhile: vLLM has already done the
 * work, and nothing is refused or charged differently).
 *
 * A stream holds one event at a time, whole (sse.ts), until it is sent: usually a few hundred
 * bytes, but vLLM's first chunk with `echo` and logprobs holds the whole prompt (megabytes), and
 * many streams stalled mid-event, or whose clients do not take them, would hold many such. Its
 * event's bytes are counted the same way, from its arrival until it is sent, and its read waits
 * the same way; but an event that still finds no room after the wait is cut (the stream ends with
 * an error, as for an event past SHIM_MAX_ANSWER_BYTES) instead of going past the budget.
 *
 * Nobody waits on others for long, so no client can hold everyone else's answers up:
 * - an answer's (an event's) first FREE_BYTES never wait: ordinary answers (a chat reply, a token
 *   chunk) are never delayed;
 * - one reader at a time may go past the budget (the "overdraft"), so readers that each hold
 *   part of it cannot wait on each other; it is handed on when that answer (event) is read, so
 *   one large event on an otherwise quiet shim goes through whatever its size, or when its reader
 *   took nothing for MAX_WAIT_MS (an upstream stalled mid-answer): that reader keeps what it
 *   holds, but then waits (or is cut) like any other; for a stream's event, only one such stalled
 *   reader at a time keeps its bytes past the budget, so however many streams stall in turn their
 *   events stay within the budget plus two large events (a non-streamed answer goes on past the
 *   budget after its wait in any case, so it is not held to this);
 * - an answer read but not yet sent (a slow client; nginx does not buffer answers) still holds
 *   its bytes, and while such answers hold the whole budget the overdraft is not given;
 * - and no read waits more than MAX_WAIT_MS in all: then a non-streamed answer goes on past the
 *   budget, and a streamed event is cut.
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
  /** When the overdraft's holder last took bytes (performance.now()): it loses it MAX_WAIT_MS after. */
  private overdraftTook = 0;
  /**
   * A holder that lost the overdraft for stalling, still holding its bytes: while there is one,
   * the overdraft is not taken from another stalled holder, or streams stalling in turn would
   * each keep a large event past the budget (memory without bound again).
   */
  private demoted: AnswerLease | null = null;
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

  /**
   * Takes `n` more bytes for `lease`, which holds `held`, if it may now (`force`: it waited long
   * enough); false when it must wait. `streamed`: a stream's event, which is cut rather than let
   * past the budget, and so may be bound by the one-demoted-holder rule (non-streamed answers go
   * past the budget after their wait anyway: holding them up would only add the wait).
   */
  tryTake(lease: AnswerLease, held: number, n: number, force: boolean, streamed = false): boolean {
    if (this.overdraft === lease) this.overdraftTook = performance.now();
    else if (held + n > FREE_BYTES && this.used + n > this.limit && !force) {
      if (this.overdraft !== null) {
        if (this.overdraftFreeIn(lease, streamed) > 0) return false;
        // Its holder stalled: it keeps what it holds, as the demoted one. If another stalled
        // holder is that already, a stream's event waits (above); a non-streamed answer, which
        // goes past the budget after its wait in any case, goes past it now, without taking the
        // overdraft: a third stalled holder would keep its bytes untracked.
        if (this.demoted !== null && this.demoted !== lease && this.demoted !== this.overdraft) {
          this.used += n;
          return true;
        }
        this.demoted = this.overdraft;
      }
      this.overdraft = null;
      if (this.unsent > this.limit) return false;
      this.overdraft = lease;
      this.overdraftTook = performance.now();
      if (this.demoted === lease) this.demoted = null; // reading again, and holding the overdraft
    }
    this.used += n;
    return true;
  }

  /**
   * Milliseconds until the overdraft's holder, if it takes nothing more, loses it to `lease`
   * (Infinity: it is free, or, for a stream's event, another stalled holder keeps its bytes past
   * the budget already: only that one's give, which wakes, can free it then).
   */
  overdraftFreeIn(lease: AnswerLease, streamed: boolean): number {
    if (this.overdraft === null) return Infinity;
    if (streamed && this.demoted !== null && this.demoted !== this.overdraft && this.demoted !== lease) return Infinity;
    return this.overdraftTook + MAX_WAIT_MS - performance.now();
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

  /** `lease` read its answer (or event): `n` more of its bytes now wait to be sent, and the overdraft is free. */
  readDone(lease: AnswerLease, n: number): void {
    this.unsent += n; // more unsent bytes make no room
    if (this.overdraft !== lease) return;
    this.overdraft = null;
    this.wake();
  }

  /**
   * Gives back `n` bytes of `lease`, `unsent` of them read and waiting to be sent. Readers waiting
   * are woken only if one may now go on: there is room again, the overdraft is free, or it may be
   * given again. Bytes given back while answers still hold more than the budget (a token chunk
   * split across two reads) wake nobody.
   */
  give(lease: AnswerLease, n: number, unsent: number, emptied: boolean): void {
    const unsentWasOver = this.unsent > this.limit;
    this.used -= n;
    this.unsent -= unsent;
    const undemoted = this.demoted === lease && emptied; // a partial give leaves it past the budget
    const freed = this.overdraft === lease || undemoted;
    if (this.overdraft === lease) this.overdraft = null;
    if (undemoted) this.demoted = null;
    if (freed || (n > 0 && this.used < this.limit) || (unsentWasOver && this.unsent <= this.limit)) this.wake();
  }

  /** Wakes every waiting reader to try again. */
  wake(): void {
    if (this.waiting.length === 0) return;
    for (const wake of this.waiting.splice(0)) wake();
  }
}

/**
 * One answer's account: what it takes is given back by `release`, once the answer is sent or
 * dropped. A stream's is used event after event: `sent` gives back each event's bytes.
 */
export class AnswerLease {
  private readonly memory: AnswerMemory;
  private held = 0;
  /** Of `held`, the bytes read and waiting to be sent. */
  private unsent = 0;
  private released = false;
  /** Set at its first wait: past it, this answer (event) waits no more. */
  private waitUntil: number | undefined;
  /** In a wait for room now: `release` ends it. */
  private waiting = false;

  constructor(memory: AnswerMemory) {
    this.memory = memory;
  }

  get holding(): boolean {
    return this.held > 0;
  }

  /** Takes `n` more bytes if there is room now (the usual case: no wait, no promise). */
  takeNow(n: number, force = false, streamed = false): boolean {
    if (this.released) return true; // dropped: nothing is counted any more
    if (!this.memory.tryTake(this, this.held, n, force, streamed)) return false;
    this.held += n;
    return true;
  }

  /**
   * Takes `n` more bytes, waiting while there is no room: MAX_WAIT_MS at most over the whole
   * answer (a stream's event). Then it takes them past the budget, or, for a stream's event
   * (`streamed`, which is cut rather than let past it), takes nothing and answers false.
   */
  async take(n: number, streamed = false): Promise<boolean> {
    if (this.waitUntil === undefined) {
      this.memory.waits++;
      this.waitUntil = performance.now() + MAX_WAIT_MS; // monotonic: a clock stepped back must not stretch it
    }
    for (;;) {
      const left = this.waitUntil - performance.now();
      if (this.takeNow(n, left <= 0 && !streamed, streamed)) return true;
      if (left <= 0) return false;
      // Woken when bytes are given back, or when a stalled holder of the overdraft loses it.
      this.waiting = true;
      await this.memory.changed(Math.min(left, Math.max(this.memory.overdraftFreeIn(this, streamed), 1)));
      this.waiting = false;
    }
  }

  /** Gives back bytes dropped while reading (an answer past the largest relayed). */
  drop(n: number): void {
    if (this.released) return; // given back already
    const given = Math.min(n, this.held - this.unsent);
    this.held -= given;
    this.memory.give(this, given, 0, this.held === 0);
  }

  /** The answer (a stream's event) is read, or its read failed: another reader may have the overdraft. */
  readDone(): void {
    if (this.released || this.held === this.unsent) return; // nothing newly read (a stream's small events)
    const n = this.held - this.unsent;
    this.unsent = this.held;
    this.memory.readDone(this, n);
  }

  /** A stream's event was sent (or dropped): its bytes are given back, and the next event has its own wait. */
  sent(): void {
    this.waitUntil = undefined;
    if (this.released || this.held === 0) return;
    this.giveAll();
  }

  /** Gives everything back: the answer was sent, or dropped. Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.giveAll();
    if (this.waiting) this.memory.wake(); // a cut request does not wait on others
  }

  private giveAll(): void {
    const n = this.held;
    const unsent = this.unsent;
    this.held = 0;
    this.unsent = 0;
    this.memory.give(this, n, unsent, true);
  }
}
