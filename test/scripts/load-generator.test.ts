import { describe, expect, it } from "vitest";
import { luaString, parseWrk } from "../../scripts/lib/load-generator.ts";

// Summaries as wrk 4.1 (Debian's) prints them.
const OK = `Running 1s test @ http://127.0.0.1:18555/v1/chat/completions
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   625.45us    1.58ms  20.28ms   94.48%
    Req/Sec    14.25k     3.72k   19.13k    63.64%
  15540 requests in 1.10s, 11.53MB read
Requests/sec:  14153.71
Transfer/sec:     10.50MB
`;

describe("the benchmarks' wrk load generator", () => {
  it("reads answered requests and requests/s from wrk's summary", () => {
    expect(parseWrk(OK)).toEqual({ generator: "wrk", rps: 14127, total: 15540, errors: 0 });
  });

  it("counts non-2xx answers and socket errors as errors, so a failing run is not reported as a fast one", () => {
    const failing = OK.replace("Requests/sec", "  Non-2xx or 3xx responses: 17\n  Socket errors: connect 0, read 2, write 0, timeout 3\nRequests/sec");
    expect(parseWrk(failing).errors).toBe(22);
  });

  it("reads runs reported in minutes", () => {
    expect(parseWrk(OK.replace("in 1.10s", "in 1.00m")).rps).toBe(259);
  });

  it("refuses output without a summary instead of reporting 0 requests/s", () => {
    expect(() => parseWrk("unable to connect to 127.0.0.1:1 Connection refused")).toThrow(/no summary/);
  });

  it("writes any request body as a Lua string literal of its exact bytes (quotes, backslashes, control characters, UTF-8)", () => {
    expect(luaString('{"a":"b\\c"}')).toBe('"{\\034a\\034:\\034b\\092c\\034}"');
    expect(luaString("x\n\u0001é")).toBe('"x\\010\\001\\195\\169"');
    // Decoding the escapes as Lua does gives back the UTF-8 bytes.
    const decoded = Buffer.from(luaString("é😀\"").slice(1, -1).split("\\").filter(Boolean).map(Number));
    expect(decoded.toString("utf8")).toBe("é😀\"");
  });
});
