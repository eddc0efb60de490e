import type { Socket } from "node:net";
import { Readable } from "node:stream";
import { setImmediate as nextTurn } from "node:timers/promises";
import type { FastifyReply, FastifyRequest } from "fastify";
import { csvLine } from "../csv-cell.ts";
import { finishRequest } from "../observability/request-line.ts";
import type { ShimContext } from "../context.ts";
import { toShimError } from "../errors.ts";
import { creditsNumber, formatCredits } from "../money/money.ts";
import { StoreUnavailableError, type UsageGroup } from "../store/store.ts";
import type { UsageBatches } from "../store/usage-batches.ts";
import { watchWriteProgress } from "../client/write-progress.ts";
import { PRICE_CSV_HEADER, priceCsvCells, priceJsonLine } from "./price-lines.ts";

/**
 * Rows formatted per turn of the event loop. A report over all keys by day can have millions of
 * rows: built as one body (mapped, then JSON.stringify or joined), it stopped every other request
 * of the process for seconds and held gigabytes. Written in pieces of this many rows, each a few
 * ms, other requests are served between them, and Node's pipe waits for the connection to drain
 * before asking for more (a slow reader holds the report's rows in the store, not here).
 */
const FORMAT_ROWS = 5000;
/**
 * How often the body looks for its client's progress (write-progress.ts), or a quarter of the
 * store's reader bound when that is shorter: a reader is given up within a bound and a quarter of
 * the last progress seen.
 */
const PROGRESS_CHECK_MS = 5000;

/**
 * /admin/usage's body, written as the store's batches arrive: the same bytes as the body built at
 * once (`head` is the JSON answer's members before `data`). Headers go with the first piece, so
 * a failure after it cannot be a status: it is logged (as the error handler logs it, and the
 * request line as 503 with its code) and the connection is closed mid-body, which the client
 * sees as a truncated answer (no final CRLF row or closing `]}`), never as a complete one.
 */
export function sendUsageBody(ctx: ShimContext, request: FastifyRequest, reply: FastifyReply, batches: UsageBatches, format: "json" | "csv", group: string, head: object): FastifyReply {
  return sendRowsBody(ctx, request, reply, batches, format, { ...usageLayout(group), head, filename: "usage.csv" });
}

/** How a streamed report's rows are written: its CSV's header and cells, its JSON's members before `data` and each row. */
export interface RowsLayout<T> {
  csvHeader: readonly string[];
  csvCells(row: T): (string | number)[];
  head: object;
  json(row: T): object;
  /** The CSV's name (content-disposition). */
  filename: string;
}

/** A usage report's columns by its grouping: by model and price, columns of their own (price-lines.ts); the other groupings' layouts stay as they were. */
function usageLayout(group: string): Omit<RowsLayout<UsageGroup>, "head" | "filename"> {
  if (group === "model,price") return { csvHeader: PRICE_CSV_HEADER, csvCells: priceCsvCells, json: priceJsonLine };
  return {
    csvHeader: ["key_id", ...group.split(","), "requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost"],
    csvCells: (r) => [r.keyId, ...groupCells(group, r).map(([, v]) => v), r.requests, r.promptTokens, r.completionTokens, r.promptTokens + r.completionTokens, formatCredits(r.cost)],
    json: (r) => ({
      key_id: r.keyId, ...Object.fromEntries(groupCells(group, r)), requests: r.requests, prompt_tokens: r.promptTokens,
      completion_tokens: r.completionTokens, total_tokens: r.promptTokens + r.completionTokens, cost: creditsNumber(r.cost),
    }),
  };
}

/** A report's body (`layout`), written as the store's batches arrive: sendUsageBody says how, and what a failure after the first byte does. */
export function sendRowsBody<T>(ctx: ShimContext, request: FastifyRequest, reply: FastifyReply, batches: UsageBatches<T>, format: "json" | "csv", layout: RowsLayout<T>): FastifyReply {
  const body = format === "csv" ? csvPieces(batches, layout) : jsonPieces(batches, layout);
  /** Logs a failure after the first byte (as the error handler logs one, and the request line as 503 with its code). */
  const failed = (e: unknown) => {
    const err = toShimError(e);
    request.log.error({ reqId: request.id, err: (e as { cause?: unknown }).cause ?? e }, "usage report failed after its first byte");
    request.shimErrorCode = err.logCode;
    finishRequest(ctx, request, err.status);
  };
  const failing = async function* () {
    try {
      yield* body;
    } catch (e) {
      failed(e);
      throw e; // Fastify destroys the connection (its headers were sent)
    }
  };
  if (format === "csv") reply.type("text/csv; charset=utf-8").header("content-disposition", `attachment; filename="${layout.filename}"`);
  else reply.type("application/json; charset=utf-8");
  const stream = Readable.from(failing(), { objectMode: false });
  // The store gives the report up once its reader has taken nothing for its bound. Counted from
  // the last batch asked for alone, it cut a client reading steadily but slower than a batch per
  // bound (a script inserting each row into a database as it reads): the next batch is asked for
  // only once the socket has taken the previous one, ~1.2 MB of JSON, ~450 KB of CSV. The
  // socket taking bytes starts that time again too, for both stores.
  const socket = request.raw.socket as Socket | null;
  // A client that takes nothing has its rows given up by the store at its bound; the body, paused
  // at a write the connection does not take, would never ask the store again to learn it. So a
  // check past that bound cuts the connection itself (found by review: it stayed open, its request
  // in flight and its watcher reading /proc, until nginx's send_timeout).
  const every = batches.idleMs === undefined ? 0 : Math.min(PROGRESS_CHECK_MS, batches.idleMs / 4);
  const stalled = batches.idleMs === undefined ? undefined : {
    afterMs: batches.idleMs + every,
    then: () => {
      const e = new StoreUnavailableError(new Error(`the report's reader took nothing for ${batches.idleMs} ms`));
      failed(e);
      stream.destroy(e);
    },
  };
  const unwatch = !stalled || !socket ? undefined : watchWriteProgress(socket, every, () => batches.touch(), stalled);
  // A stream destroyed before it was read (a client gone at once) never runs the generators
  // whose end gives the report's rest up: given up here too (twice is harmless).
  stream.once("close", () => {
    unwatch?.();
    void batches.return();
  });
  return reply.send(stream);
}

/**
 * A row's group columns, named: the group's one (model or day), or by day and model the day and
 * then the model, so that the columns before `model` are those of a report by day.
 */
function groupCells(group: string, r: UsageGroup): [string, string][] {
  return group === "day,model" ? [["day", r.group], ["model", r.model ?? ""]] : [[group, r.group]];
}

async function* csvPieces<T>(batches: UsageBatches<T>, layout: RowsLayout<T>): AsyncGenerator<string> {
  yield csvLine(layout.csvHeader);
  for await (const rows of pieces(batches)) yield rows.map((r) => csvLine(layout.csvCells(r))).join("");
}

async function* jsonPieces<T>(batches: UsageBatches<T>, layout: RowsLayout<T>): AsyncGenerator<string> {
  // The answer as JSON.stringify writes it, `data` last: its opening, the rows, its close.
  yield JSON.stringify({ ...layout.head, data: [] }).slice(0, -2);
  let first = true;
  for await (const rows of pieces(batches)) {
    const json = rows.map((r) => JSON.stringify(layout.json(r))).join(",");
    yield first ? json : `,${json}`;
    first = false;
  }
  yield "]}";
}

/** The batches in pieces of at most FORMAT_ROWS rows, a turn of the event loop before each (an in-memory SQLite store's rows come as one batch). */
async function* pieces<T>(batches: UsageBatches<T>): AsyncGenerator<T[]> {
  for await (const batch of batches) {
    for (let i = 0; i < batch.length; i += FORMAT_ROWS) {
      await nextTurn();
      yield batch.length <= FORMAT_ROWS ? batch : batch.slice(i, i + FORMAT_ROWS);
    }
  }
}
