import { describe, expect, it } from "vitest";
import { Pricer } from "../../api-shim/src/money/pricing.ts";

// Pinned by a mutation review (the code was right; no test held it): Pricer.cost's cap, pinned at its edge.
describe("Pricer.cost caps at the hold, and only above it", () => {
  const pricer = new Pricer({ request: 100, batchRequest: 50, models: new Map([["m", { promptPer1k: 1000, completionPer1k: 2000 }]]) }, null);
  const usage = { promptTokens: 10, completionTokens: 10 }; // 100 + 10 + 20 = 130 µc

  it("a cost exactly the hold is not capped (else every request of an unpriced model, held its request price, is counted and logged as capped)", () => {
    expect(pricer.cost("m", false, usage, 130)).toEqual({ cost: 130, capped: false });
    expect(pricer.cost("unpriced", false, usage, pricer.requestPrice(false))).toEqual({ cost: 100, capped: false });
  });

  it("a cost above the hold is the hold, capped", () => {
    expect(pricer.cost("m", false, usage, 129)).toEqual({ cost: 129, capped: true });
  });
});
