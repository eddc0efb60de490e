import type { ServerResponse } from "node:http";

/** The largest piece written at once: UTF-16 code units of a string, or bytes of a Buffer. */
const WRITE_PIECE = 256 * 1024;
const isHighSurrogate = (c: number) => c >= 0xd800 && c < 0xdc00;

/**
 * Writes `data` to a response with backpressure: it waits for the client to take each piece (or
 * leave) instead of buffering without bound.
 *
 * A client that stops reading must not keep its answer's memory, the upstream connection, its hold
 * and its place in flight forever: what it has not taken within `idleMs` ends the response as if
 * it had left. Large data goes out in pieces, each with its own idle timeout, so the timeout
 * counts time without progress, not the time to send it all (characters are never split). The
 * kernel shows progress in steps: it takes more once the client has read about half of what the
 * sockets hold (a MB or two), so a client reading less than that per timeout is cut. `signal` (a drain: SIGTERM) cuts it at
 * once: the process must not outlive its stop grace period. A response already destroyed (its
 * client left) is written nothing: every write would wait for a 'drain' that never comes.
 */
export async function writeWithBackpressure(out: ServerResponse, data: string | Buffer, idleMs: number, signal: AbortSignal): Promise<void> {
  if (data.length <= WRITE_PIECE) return writePiece(out, data, idleMs, signal);
  for (let at = 0; at < data.length; ) {
    let end = Math.min(at + WRITE_PIECE, data.length);
    if (typeof data === "string" && isHighSurrogate(data.charCodeAt(end - 1))) end--;
    await writePiece(out, typeof data === "string" ? data.slice(at, end) : data.subarray(at, end), idleMs, signal);
    at = end;
  }
}

async function writePiece(out: ServerResponse, piece: string | Buffer, idleMs: number, signal: AbortSignal): Promise<void> {
  if (out.destroyed || out.write(piece)) return;
  await new Promise<void>((resolve) => {
    const cut = () => out.destroy();
    const stalled = setTimeout(cut, idleMs);
    const go = () => {
      clearTimeout(stalled);
      signal.removeEventListener("abort", cut);
      out.off("drain", go);
      out.off("close", go);
      resolve();
    };
    out.on("drain", go);
    out.on("close", go);
    if (signal.aborted) cut();
    else signal.addEventListener("abort", cut, { once: true });
  });
}
