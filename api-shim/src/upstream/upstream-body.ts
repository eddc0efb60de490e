import type { Dispatcher } from "undici";
import { errors as undiciErrors } from "undici";

/**
 * A response body fed by undici's dispatch callbacks: an async iterable of chunks with the
 * least machinery between the socket and the SSE splitter (no Readable stream), and
 * backpressure through the dispatch controller (pause above HIGH queued chunks, resume below LOW).
 */
const HIGH = 64;
const LOW = 8;

export class UpstreamBody implements AsyncIterable<Uint8Array> {
  private readonly chunks: Buffer[] = [];
  private head = 0;
  private ended = false;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;
  private controller: Dispatcher.DispatchController | null = null;

  attach(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
  }

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    if (this.chunks.length - this.head > HIGH && this.controller && !this.controller.paused) this.controller.pause();
    this.notify();
  }

  end(): void {
    this.ended = true;
    this.notify();
  }

  fail(error: Error): void {
    this.failure ??= error;
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    for (;;) {
      if (this.head < this.chunks.length) {
        const chunk = this.chunks[this.head]!;
        this.chunks[this.head++] = undefined as unknown as Buffer;
        if (this.head === this.chunks.length) {
          this.chunks.length = 0;
          this.head = 0;
        }
        if (this.controller?.paused && this.chunks.length - this.head < LOW) this.controller.resume();
        yield chunk;
        continue;
      }
      if (this.failure) throw this.failure;
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  async text(): Promise<string> {
    const parts: Buffer[] = [];
    for await (const c of this) parts.push(c as Buffer);
    return Buffer.concat(parts).toString("utf8");
  }

  /**
   * Stops reading: aborts the upstream request if it is still going. With `error` (a deadline),
   * the reader's next step throws it even if the body had all arrived: what it read is not the
   * whole answer.
   */
  destroy(error?: Error): void {
    if (!this.ended && !this.failure && this.controller && !this.controller.aborted) {
      this.controller.abort(error ?? new undiciErrors.RequestAbortedError());
    }
    if (error) this.failure ??= error;
    this.ended = true;
    this.chunks.length = 0;
    this.head = 0;
    this.notify();
  }
}

export interface DispatchedResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: UpstreamBody;
}

/**
 * Dispatches a request; resolves at the response headers, rejects on failure before them.
 *
 * Undici hands over the request's controller only when the request is written to a connection,
 * so an abort (client gone, drain) or a timeout that comes while the request still waits for a
 * connection rejects at once and is applied when the controller arrives: the request is then
 * dropped before it is sent, instead of running upstream for a client that has left.
 *
 * `onSent` is called when the request goes to a connection: from then on the upstream has it.
 *
 * `headersTimeoutMs` is kept here, with a native timer, and undici's own is off (see
 * upstream.ts): undici's runs on coarse timers (500 ms ticks), which let a 300 ms timeout fire
 * after a second, and it does not count the time spent waiting for a connection.
 */
export function dispatch(dispatcher: Dispatcher, options: Dispatcher.DispatchOptions, signal: AbortSignal | undefined, headersTimeoutMs: number, onSent?: () => void): Promise<DispatchedResponse> {
  return new Promise((resolve, reject) => {
    const body = new UpstreamBody();
    let started = false;
    let controller: Dispatcher.DispatchController | null = null;
    let early: Error | null = null;
    const stop = (error: Error) => {
      if (controller) controller.abort(error);
      else if (early === null) {
        early = error;
        cleanup();
        reject(error);
      }
    };
    const onAbort = () => stop(new undiciErrors.RequestAbortedError());
    if (signal?.aborted) return reject(new undiciErrors.RequestAbortedError());
    const headersTimer = setTimeout(() => stop(new undiciErrors.HeadersTimeoutError()), headersTimeoutMs);
    const cleanup = () => {
      clearTimeout(headersTimer);
      signal?.removeEventListener("abort", onAbort);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    dispatcher.dispatch(options, {
      onRequestStart(c) {
        controller = c;
        body.attach(c);
        if (early) c.abort(early);
        else onSent?.();
      },
      onResponseStart(_c, statusCode, headers) {
        started = true;
        clearTimeout(headersTimer);
        resolve({ status: statusCode, headers: headers as DispatchedResponse["headers"], body });
      },
      onResponseData(_c, chunk) {
        body.push(chunk);
      },
      onResponseEnd() {
        cleanup();
        body.end();
      },
      onResponseError(_c, error) {
        cleanup();
        if (started) body.fail(error);
        else reject(error);
      },
    });
  });
}
