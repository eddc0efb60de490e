import { EventEmitter } from "node:events";
import { PassThrough } from "node:stream";
import type { FastifyReply, FastifyRequest, RequestPayload } from "fastify";
import { describe, expect, it } from "vitest";
import { BodyMemory } from "../../api-shim/src/limits/body-memory.ts";

/** From a mutation review of body-memory.ts (SHIM_BODY_MEMORY_BYTES), with the documented numbers written out. */
const KiB = 1024;
const MiB = 1024 * KiB;

describe("the body memory's edges", () => {
  it("a large body that fills the budget exactly is taken beside another large one (the budget is a most, not a less-than)", () => {
    const m = new BodyMemory(MiB);
    expect(m.take(0, MiB / 2)).toBe(true);
    expect(m.take(0, MiB / 2)).toBe(true);
    expect(m.inUse).toBe(MiB);
    expect(m.take(0, 1)).toBe(true); // a small one, always
    expect(m.take(0, 100 * KiB)).toBe(false); // a third large one: past it
  });

  it("a body of 64 KiB (65,536 bytes, as docs/api-shim/operations.md says) is always taken, while a large body holds more than the budget", () => {
    const m = new BodyMemory(MiB);
    expect(m.take(0, 2 * MiB)).toBe(true); // the one large body past the budget
    expect(m.take(0, 64 * KiB)).toBe(true);
    expect(m.take(0, 64 * KiB + 1)).toBe(false);
  });

  it("a body whose Content-Length is exactly SHIM_MAX_BODY_BYTES is counted (it is admitted, not refused as too large)", () => {
    const m = new BodyMemory(MiB);
    const hook = m.hook(2 * MiB, () => {});
    const res = new EventEmitter();
    const request = { headers: { "content-length": String(2 * MiB) }, raw: { destroyed: false } } as unknown as FastifyRequest;
    const reply = { raw: res } as unknown as FastifyReply;
    let result: [Error | null, unknown] | undefined;
    hook(request, reply, new PassThrough() as unknown as RequestPayload, (err, payload) => (result = [err, payload]));
    expect(result?.[0]).toBeNull();
    expect(m.inUse).toBe(2 * MiB);
    res.emit("close");
    expect(m.inUse).toBe(0);
  });
});
