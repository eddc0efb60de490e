import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiKey } from "../../scripts/lib/admin-client.ts";
import { frontProxy } from "../support/front-proxy.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { runManageKeys, shellWords } from "./run-manage-keys.ts";

let h: Harness;
beforeAll(async () => { h = await startShim(); });
afterAll(() => h.close());

const keys = (argv: string[]) => runManageKeys(h, argv);


async function named(name: string): Promise<ApiKey[]> {
  const r = await keys(["list", "--url", h.url, "--json"]);
  return (JSON.parse(r.out) as ApiKey[]).filter((k) => k.name === name);
}

describe("manage-keys create --idempotency-key", () => {
  it("an answer lost: the last line gives the retry, which pasted into bash makes no second key and says how to get a secret", async () => {
    const front = await frontProxy(h.url, (method, url) => (method === "POST" && url === "/admin/keys" ? "drop" : "forward"));
    try {
      const r = await keys(["create", "--url", front.url, "--name", "order 7's key", "--credits", "500", "--tier", "developer", "--idempotency-key", "order-7"]);
      expect(r.code).toBe(5);
      expect((await named("order 7's key")).map((k) => k.balance)).toEqual([500]); // made, its answer lost
      const retry = `npm run manage-keys -- create --url=${front.url} --name='order 7'\\''s key' --credits=500 --tier=developer --idempotency-key=order-7`;
      expect(r.io.stderr[0]).toBe(`Idempotency-Key: order-7; to retry safely: ${retry}`);
      expect(r.lastLine).toBe(`The key may have been created. Retry with the same Idempotency-Key, which makes it at most once and answers its id (not its secret, which was only in the lost answer: rotate the key for a new one): ${retry}`);

      // Run as printed (against the shim itself): the name is in use, by this very key, and the retry goes all the same.
      const again = await keys(shellWords(retry).map((a) => a.replace(front.url, h.url)));
      expect(again.code, again.err).toBe(0);
      const [made] = await named("order 7's key");
      expect(await named("order 7's key")).toHaveLength(1);
      expect(made!.balance).toBe(500);
      expect(again.out).toBe(`Already created with this Idempotency-Key; nothing made now: key order 7's key (id ${made!.id}), balance 500.\n` +
        `Its secret was only in the first answer (only its hash is kept). To get a new one: npm run manage-keys -- rotate --url=${h.url} --key=${made!.id}`);

      const json = await keys([...shellWords(retry).map((a) => a.replace(front.url, h.url)), "--json"]);
      expect(JSON.parse(json.out)).toMatchObject({ id: made!.id, key: null, replayed: true });
    } finally {
      front.close();
    }
  });

  it("the same Idempotency-Key with other flags: refused, nothing made, and said why", async () => {
    expect((await keys(["create", "--url", h.url, "--name", "order-8", "--credits", "5", "--idempotency-key", "order-8"])).code).toBe(0);
    const r = await keys(["create", "--url", h.url, "--name", "order-8b", "--credits", "5", "--idempotency-key", "order-8"]);
    expect(r.code).toBe(4);
    expect(r.lastLine).toBe("Idempotency-Key order-8 made another key, from another --name, --credits, --tier, --models or --expires-at: nothing was created now. Give its first command's flags to get that key back, or another --idempotency-key for a new key.");
    expect(await named("order-8b")).toEqual([]);
  });

  it("a first create with it prints the key once, as without; without it a name in use is still refused", async () => {
    const r = await keys(["create", "--url", h.url, "--name", "order-9", "--credits", "5", "--idempotency-key", "order-9"]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/^Created key order-9 \(id \w{12}\): tier free, 5 credits\.\nKey \(shown once; only its hash is stored\): sk-gs-/);
    const plain = await keys(["create", "--url", h.url, "--name", "order-9", "--credits", "5"]);
    expect(plain.code).toBe(4);
    expect(plain.lastLine).toContain('a key named "order-9" is in use');
  });

  it("a retry whose Idempotency-Key made no key, for a name in use: the new key is printed and the two namesakes said, exit 1", async () => {
    await keys(["create", "--url", h.url, "--name", "order-10", "--credits", "5"]);
    const r = await keys(["create", "--url", h.url, "--name", "order-10", "--credits", "5", "--idempotency-key", "never-used"]);
    expect(r.code).toBe(1);
    expect(r.out).toContain("Key (shown once; only its hash is stored): sk-gs-");
    expect(r.lastLine).toMatch(/^A key named "order-10" was in use \(id \w{12}\) and this create made another; --key "order-10" now names two\. Revoke the one not wanted: /);
    expect(await named("order-10")).toHaveLength(2);
  });

  it("refused before sending: with --from, or a key the header cannot carry", async () => {
    const roster = await keys(["create", "--url", h.url, "--from", "roster.csv", "--idempotency-key", "k"]);
    expect(roster.lastLine).toBe("--idempotency-key goes with a single create (--name); a roster run again makes only the keys missing");
    const padded = await keys(["create", "--url", h.url, "--name", "order-11", "--idempotency-key", "order 11 "]);
    expect(padded.lastLine).toBe("--idempotency-key starts or ends with a space: give it without, e.g. invoice-1042");
    expect(await named("order-11")).toEqual([]);
  });
});

describe("manage-keys top-up --amount with spaces around it (pasted from a spreadsheet)", () => {
  it("is read as the number: the credits added and the retry line say 5", async () => {
    const { id } = await h.createKey({ name: "spaced-amount", credits: 1 });
    const r = await keys(["top-up", "--url", h.url, "--key", id, "--amount", " 5 ", "--idempotency-key", "inv-spaced"]);
    expect(r.code, r.err).toBe(0);
    expect(r.io.stderr[0]).toBe(`Idempotency-Key: inv-spaced; to retry safely: npm run manage-keys -- top-up --url=${h.url} --key=${id} --amount=5 --idempotency-key=inv-spaced`);
    expect(r.out).toBe(`Added 5 credits to spaced-amount (${id}): balance 6, remaining 6.`);
  });
});
