import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateKey } from "../../api-shim/src/auth/keys.ts";
import type { ApiKey, CreatedKey } from "../../scripts/lib/admin-client.ts";
import { type FrontAnswer, frontProxy } from "../support/front-proxy.ts";
import { olderShim } from "../support/older-shim.ts";
import { DEFAULT_FILE, startShim, type Harness } from "../support/shim-harness.ts";
import { runManageKeys } from "./run-manage-keys.ts";

/**
 * `manage-keys rotate`: a leaked key gets a new secret and keeps its id, name, balance and usage
 * (POST /admin/keys/{id}/rotate), printed once as `create` prints a key.
 */
const stackKey = generateKey();
let h: Harness;
beforeAll(async () => {
  h = await startShim({ file: { ...DEFAULT_FILE, bootstrapKeys: [{ id: stackKey.id, name: "from-stack", hash: stackKey.hash, credits: 5, tier: "free" }] } });
});
afterAll(() => h.close());

const keys = (argv: string[]) => runManageKeys(h, argv);

const chat = (key: string) => h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "Hello" }], max_tokens: 4 });
const listed = async (): Promise<ApiKey[]> => JSON.parse((await keys(["list", "--url", h.url, "--json"])).out) as ApiKey[];

describe("manage-keys rotate", () => {
  it("by name: prints the new key once; the old one gets 401, the new one works, balance and usage stay with the one key", async () => {
    const { id, key: old } = await h.createKey({ name: "leaked", credits: 5, tier: "developer" });
    await chat(old);
    const before = (await listed()).find((k) => k.id === id)!;
    const r = await keys(["rotate", "--url", h.url, "--key", "leaked"]);
    expect(r.code, r.err).toBe(0);
    const [first, second] = r.out.split("\n");
    expect(first).toBe(`Rotated key leaked (id ${id}): a new secret; its balance (${before.balance}), usage, tier and models are unchanged. The old key no longer works (401).`);
    const key = /^Key \(shown once; only its hash is stored\): (sk-gs-\S+)$/.exec(second!)?.[1];
    expect(key).toMatch(new RegExp(`^sk-gs-${id}_`));
    h.secrets.add(key!);
    expect(r.err).not.toContain(key!.split("_")[1]!);

    await expect(chat(old)).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    expect((await chat(key!)).choices[0]?.message.content).toBeTruthy();
    const after = (await listed()).filter((k) => k.name === "leaked");
    expect(after).toHaveLength(1);
    expect(after[0]!.id).toBe(id);
    expect(after[0]!.balance).toBeLessThan(before.balance);

    const json = await keys(["rotate", "--url", h.url, "--key", id, "--json"]);
    expect(json.code, json.err).toBe(0);
    const shown = JSON.parse(json.out) as CreatedKey;
    h.secrets.add(shown.key);
    expect(shown).toMatchObject({ id, name: "leaked", tier: "developer", balance: after[0]!.balance, revoked_at: null });
    expect(shown.key).not.toBe(key);
    await expect(chat(key!)).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
  });

  it("a stack key, a revoked key, a key that matches nothing: exit 4 (refused), saying why and what to do", async () => {
    const stack = await keys(["rotate", "--url", h.url, "--key", "from-stack"]);
    expect(stack.code).toBe(4);
    expect(stack.err).toMatch(/409 key_from_configuration: .*Rotate it in the stack: `pulumi up --replace`/);
    expect((await chat(stackKey.key)).choices).toHaveLength(1); // its secret unchanged

    const { id } = await h.createKey({ name: "gone", credits: 1 });
    expect((await keys(["revoke", "--url", h.url, "--key", id])).code).toBe(0);
    const revoked = await keys(["rotate", "--url", h.url, "--key", id]);
    expect(revoked.code).toBe(4);
    expect(revoked.err).toMatch(/409 key_inactive: This key is revoked/);

    const none = await keys(["rotate", "--url", h.url, "--key", "no-such-key"]);
    expect(none.code).toBe(4);
    expect(none.err).toMatch(/^--key "no-such-key": no key with that id or name; keys in use: /);
  });

  it("usage mistakes are refused before anything is sent: no --key, a flag of another command, a mistyped command", async () => {
    expect((await keys(["rotate", "--url", h.url])).err).toMatch(/--key is required/);
    expect((await keys(["rotate", "--url", h.url, "--key", "x", "--tier", "pro"])).err).toMatch(/^--tier does not go with rotate; rotate takes: --key$/m);
    expect((await keys(["rotat", "--url", h.url, "--key", "x"])).err).toMatch(/"rotat" is not a command\. Did you mean rotate\?/);
    const help = await keys(["--help"]);
    expect(help.out).toMatch(/^ {2}rotate +--key <id\|name> /m);
    expect(help.out).toContain("npm run manage-keys -- rotate --stack acme --key team-07");
  });

  it.each(["drop", "gateway-timeout"] as const)("an answer lost after it was sent (%s): the key may have been rotated, run rotate again", async (answer: FrontAnswer) => {
    const { id, key: old } = await h.createKey({ name: `lost-${answer}`, credits: 1 });
    const front = await frontProxy(h.url, (method, url) => (method === "POST" && url.endsWith("/rotate") ? answer : "forward"));
    try {
      const r = await keys(["rotate", "--url", front.url, "--key", `lost-${answer}`]);
      expect(r.code).toBe(5);
      expect(r.out).toBe("");
      expect(r.lastLine).toBe(`Key lost-${answer} (${id}) may have been rotated (its secret was only in the lost answer, and the old one may no longer work either): ` +
        `run npm run manage-keys -- rotate --url=${front.url} --key=${id} again to give it a secret you know.`);
      await expect(chat(old)).rejects.toBeInstanceOf(OpenAI.AuthenticationError); // it was
      const again = await keys(["rotate", "--url", h.url, "--key", id, "--json"]);
      expect(again.code, again.err).toBe(0);
      const { key } = JSON.parse(again.out) as CreatedKey;
      h.secrets.add(key);
      expect((await chat(key)).choices).toHaveLength(1);
    } finally {
      front.close();
    }
  });

  it("against a shim older than the route (its 404 for an unknown route) says to upgrade the shim", async () => {
    const old = await olderShim((req) => ({ status: 404, message: `Unknown route: ${req.method} ${req.url}`, code: "not_found" }));
    try {
      const r = await keys(["rotate", "--url", old.url, "--key", "team-07"]);
      expect(r.code).toBe(4);
      expect(r.lastLine).toBe("this shim predates `rotate` (POST /admin/keys/{id}/rotate): upgrade it (pulumi up)");
    } finally {
      old.close();
    }
  });
});
