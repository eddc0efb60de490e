import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiKey, CreatedKey } from "../../scripts/lib/admin-client.ts";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { adminClient, keyStatus } from "../../scripts/lib/admin-client.ts";
import { runCommand } from "../../scripts/manage-keys.ts";
import { originOf } from "../../scripts/lib/tenant-target.ts";
import { type FrontAnswer, frontProxy } from "../support/front-proxy.ts";
import { olderShim } from "../support/older-shim.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { freePort } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";
import { runManageKeys, shellWords } from "./run-manage-keys.ts";

let h: Harness;
beforeAll(async () => {
  h = await startShim();
});
afterAll(() => h.close());

/** Runs manage-keys against the test's shim; the admin token in the environment, as an operator would. */
const keys = (argv: string[], options: { env?: NodeJS.ProcessEnv; pulumi?: FakePulumi } = {}) => runManageKeys(h, argv, options);

const chat = (key: string) =>
  h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "Hello" }], max_tokens: 4 });

async function listed(): Promise<ApiKey[]> {
  const r = await keys(["list", "--url", h.url, "--json"]);
  expect(r.code, r.err).toBe(0);
  return JSON.parse(r.out) as ApiKey[];
}

describe("manage-keys against a real shim", () => {
  it("create: the plaintext key is printed once and works with the OpenAI SDK", async () => {
    const r = await keys(["create", "--url", `${h.url}/v1`, "--name", "team-a", "--credits", "10", "--tier", "developer", "--json"]);
    expect(r.code, r.err).toBe(0);
    const created = JSON.parse(r.out) as CreatedKey;
    h.secrets.add(created.key);
    expect(created).toMatchObject({ name: "team-a", tier: "developer", balance: 10, revoked_at: null });
    const completion = await chat(created.key);
    expect(completion.choices[0]?.message.content).toBeTruthy();

    const text = await keys(["create", "--url", h.url, "--name", "team-b", "--credits", "2.5"]);
    expect(text.code, text.err).toBe(0);
    const key = /Key \(shown once; only its hash is stored\): (sk-gs-\S+)/.exec(text.out)?.[1];
    expect(key).toBeDefined();
    h.secrets.add(key!);
    expect(text.out).toMatch(/^Created key team-b \(id \w+\): tier \w+, 2\.5 credits\./);
    expect((await chat(key!)).choices).toHaveLength(1);
  });

  it("create without --credits makes a key with none and says so, with the top-up that gives it some; an explicit --credits 0 is not told", async () => {
    const r = await keys(["create", "--url", h.url, "--name", "no-credits-yet"]);
    expect(r.code, r.err).toBe(0);
    const key = /Key \(shown once; only its hash is stored\): (sk-gs-\S+)/.exec(r.out)![1]!;
    h.secrets.add(key);
    expect(r.out).toMatch(/^Created key no-credits-yet \(id \w+\): tier \w+, 0 credits\./);
    expect(r.err).toContain("no-credits-yet has no credits (no --credits): its requests get 402 insufficient_credits until a top-up: npm run manage-keys -- top-up --url=");
    expect(r.err).toContain(" --key=no-credits-yet --amount <credits>");
    await expect(chat(key)).rejects.toMatchObject({ status: 402 });
    const zero = await keys(["create", "--url", h.url, "--name", "zero-on-purpose", "--credits", "0"]);
    expect(zero.code, zero.err).toBe(0);
    h.secrets.add(/Key \(shown once; only its hash is stored\): (sk-gs-\S+)/.exec(zero.out)![1]!);
    expect(zero.err).not.toContain("has no credits");
  });

  it("create with the name of a key in use is refused, saying how to proceed; a revoked key's name can be taken again", async () => {
    const first = await h.createKey({ name: "same-name", credits: 1 });
    const r = await keys(["create", "--url", h.url, "--name", "same-name", "--credits", "5"]);
    expect(r.code).toBe(4);
    expect(r.out).toBe("");
    expect(r.err).toBe(`a key named "same-name" is in use (id ${first.id}), and --key "same-name" must name one key: ` +
      `choose another --name, or revoke that key first (npm run manage-keys -- revoke --url=${h.url} --key=${first.id})`);
    expect((await listed()).filter((k) => k.name === "same-name")).toHaveLength(1);
    // With a space at an end, as pasted: the shim stores names trimmed, so it is the same name.
    const spaced = await keys(["create", "--url", h.url, "--name", "same-name ", "--credits", "5"]);
    expect(spaced.code, spaced.err).toBe(4);
    expect(spaced.err).toContain('a key named "same-name" is in use');
    expect((await listed()).filter((k) => k.name === "same-name")).toHaveLength(1);
    // And --key " same-name" names it.
    expect((await keys(["top-up", "--url", h.url, "--key", " same-name", "--amount", "1"])).code).toBe(0);

    expect((await keys(["revoke", "--url", h.url, "--key", first.id])).code).toBe(0);
    const again = await keys(["create", "--url", h.url, "--name", "same-name", "--credits", "5", "--json"]);
    expect(again.code, again.err).toBe(0);
    h.secrets.add((JSON.parse(again.out) as CreatedKey).key);
  });

  it("create --expires-at: the key expires then; a shim that ignored the expiry is reported, with the key", async () => {
    const r = await keys(["create", "--url", h.url, "--name", "temp", "--expires-at", "2099-01-01T00:00:00Z", "--json"]);
    expect(r.code, r.err).toBe(0);
    const created = JSON.parse(r.out) as CreatedKey;
    h.secrets.add(created.key);
    expect(created.expires_at).toBe("2099-01-01T00:00:00.000Z");

    // An older shim that does not read the field: the key exists, so it is printed, and exit 1 says why.
    const old = createServer((req, res) => {
      req.resume();
      if (req.method === "GET") return void res.writeHead(200, { "content-type": "application/json" }).end('{"object":"list","data":[]}'); // create looks for a namesake first
      res.writeHead(201, { "content-type": "application/json" }).end(JSON.stringify({ ...created, id: "AAAAAAAAAAAA", name: "temp2", expires_at: null }));
    });
    await new Promise<void>((resolve) => old.listen(0, "127.0.0.1", resolve));
    try {
      const url = `http://127.0.0.1:${(old.address() as AddressInfo).port}`;
      const lost = await keys(["create", "--url", url, "--name", "temp2", "--expires-at", "2099-01-01T00:00:00Z"]);
      expect(lost.code).toBe(1);
      expect(lost.out).toContain(`Key (shown once; only its hash is stored): ${created.key}`);
      expect(lost.err).toContain("The shim did not apply --expires-at: this key never expires.");
      expect(lost.err).toContain("revoke --key AAAAAAAAAAAA");
    } finally {
      old.close();
    }
  });

  it("list: a table and JSON with every key, never a plaintext key", async () => {
    const created = await h.createKey({ name: "listed-key", credits: 7 });
    const table = await keys(["list", "--url", h.url]);
    expect(table.code, table.err).toBe(0);
    expect(table.out.split("\n")[0]).toMatch(/^ID +NAME +TIER +BALANCE +HELD +IN-FLIGHT +REMAINING +MODELS +CREATED +EXPIRES +REVOKED +STATUS +SOURCE$/);
    expect(table.out).toMatch(new RegExp(`^${created.id} +listed-key +enterprise +7 +0 +0 +7 +all +\\S+ +- +- +active +api$`, "m"));
    expect(table.out).not.toContain(created.key);
    expect((await listed()).find((k) => k.id === created.id)).toMatchObject({ name: "listed-key", balance: 7 });
  });

  it("top-up twice with the same Idempotency-Key credits once", async () => {
    const { id } = await h.createKey({ name: "topped", credits: 1 });
    const first = await keys(["top-up", "--url", h.url, "--key", id, "--amount", "2.5", "--note", "invoice 17", "--idempotency-key", "inv-17"]);
    expect(first.code, first.err).toBe(0);
    expect(first.err).toContain("Idempotency-Key: inv-17");
    expect(first.out).toBe(`Added 2.5 credits to topped (${id}): balance 3.5, remaining 3.5.`);
    const retry = await keys(["top-up", "--url", h.url, "--key", "topped", "--amount", "2.5", "--note", "invoice 17", "--idempotency-key", "inv-17"]);
    expect(retry.code, retry.err).toBe(0);
    expect(retry.out).toContain("Already applied with this Idempotency-Key; nothing added.");
    expect((await listed()).find((k) => k.id === id)?.balance).toBe(3.5);
    const audit = (await h.store.audit()).find((a) => a.keyId === id)!;
    expect(audit.ledgerSum).toBe(3_500_000);

    // Without the flag a fresh key is generated and printed before the request, for a retry.
    const fresh = await keys(["top-up", "--url", h.url, "--key", id, "--amount", "1"]);
    expect(fresh.code, fresh.err).toBe(0);
    const generated = /topup-[0-9a-f-]{36}/.exec(fresh.err)?.[0];
    expect(fresh.err).toBe(`Idempotency-Key: ${generated}; to retry safely: npm run manage-keys -- top-up --url=${h.url} --key=${id} --amount=1 --idempotency-key=${generated}`);
    expect((await listed()).find((k) => k.id === id)?.balance).toBe(4.5);

    // The same key with another amount is a different request: the API refuses it.
    const conflict = await keys(["top-up", "--url", h.url, "--key", id, "--amount", "9", "--idempotency-key", "inv-17"]);
    expect(conflict.code).toBe(4);
    expect(conflict.err).toContain("409 idempotency_key_reused: This Idempotency-Key was already used with a different request.");
    expect(conflict.lastLine).toBe(`The first top-up with Idempotency-Key inv-17 was applied to topped (${id}); this one (--amount 9) is a different request, so nothing was added now. ` +
      `Compare the key's balance (npm run manage-keys -- list --url=${h.url}); to add these credits as another top-up, run it without --idempotency-key.`);
    expect((await listed()).find((k) => k.id === id)?.balance).toBe(4.5);
  });

  it("a top-up retried after the key was revoked gets the first answer; after a rotation to a namesake, a retry by name is refused", async () => {
    const old = await h.createKey({ name: "rotated", credits: 10 });
    const first = await keys(["top-up", "--url", h.url, "--key", "rotated", "--amount", "100", "--idempotency-key", "inv-2001"]);
    expect(first.code, first.err).toBe(0);
    expect(first.err).toBe(`Idempotency-Key: inv-2001; to retry safely: npm run manage-keys -- top-up --url=${h.url} --key=${old.id} --amount=100 --idempotency-key=inv-2001`);
    expect((await keys(["revoke", "--url", h.url, "--key", "rotated"])).code).toBe(0);

    // The retry by name reaches the revoked key, and the shim answers from its first reply.
    const replay = await keys(["top-up", "--url", h.url, "--key", "rotated", "--amount", "100", "--idempotency-key", "inv-2001"]);
    expect(replay.code, replay.err).toBe(0);
    expect(replay.out).toBe(`Already applied with this Idempotency-Key; nothing added. Key rotated (${old.id}) had a balance of 110 right after it; now 110 (revoked).`);

    // Rotated: a new key with the old name. The same retry by name would credit the new key.
    const fresh = await h.createKey({ name: "rotated", credits: 10 });
    const byName = await keys(["top-up", "--url", h.url, "--key", "rotated", "--amount", "100", "--idempotency-key", "inv-2001"]);
    expect(byName.code).toBe(4);
    expect(byName.err).toContain(`--key "rotated" names other keys too (${old.id}), revoked or not; with --idempotency-key give the id`);
    // The name with a space at an end, as pasted, is the same name: refused too.
    const spaced = await keys(["top-up", "--url", h.url, "--key", " rotated", "--amount", "100", "--idempotency-key", "inv-2001"]);
    expect(spaced.code, spaced.err).toBe(4);
    expect(spaced.err).toContain(`names other keys too (${old.id}), revoked or not; with --idempotency-key give the id`);
    const byId = await keys(["top-up", "--url", h.url, "--key", old.id, "--amount", "100", "--idempotency-key", "inv-2001"]);
    expect(byId.code, byId.err).toBe(0);
    expect(byId.out).toContain("Already applied with this Idempotency-Key; nothing added.");
    const balances = new Map((await listed()).map((k) => [k.id, k.balance]));
    expect([balances.get(old.id), balances.get(fresh.id)]).toEqual([110, 10]);
  });

  it("a name whose older namesake expired means the key in use (a key rotated by expiry); the expired one is not listed as in use", async () => {
    const expiresAt = Date.now() + 1000; // ahead enough to be in the future when the shim checks it, on a loaded machine too
    const old = await h.createKey({ name: "team-x", credits: 1, expires_at: new Date(expiresAt).toISOString() });
    await new Promise((r) => setTimeout(r, Math.max(0, expiresAt - Date.now()) + 50)); // expired: 401 for its clients, "expired" in `list`
    const fresh = await h.createKey({ name: "team-x", credits: 1 });
    const top = await keys(["top-up", "--url", h.url, "--key", "team-x", "--amount", "5"]);
    expect(top.code, top.err).toBe(0);
    expect((await listed()).find((k) => k.id === fresh.id)?.balance).toBe(6);
    const nothing = await keys(["revoke", "--url", h.url, "--key", "nope-x"]);
    const [, shown, more] = /keys in use: (.*?)(?:, and (\d+) more \(npm run manage-keys -- list\))?$/.exec(nothing.err)!;
    const inUse = (await listed()).filter((k) => keyStatus(k) === "active").length;
    expect(shown!.split("), ").length + Number(more ?? 0)).toBe(inUse);
    expect(shown).not.toContain(old.id);
    const revoked = await keys(["revoke", "--url", h.url, "--key", "team-x"]);
    expect(revoked.code, revoked.err).toBe(0);
    expect(revoked.out).toContain(`Revoked key team-x (${fresh.id})`);
  });

  it("a --key that matches nothing lists at most ten keys in use, not thousands", async () => {
    for (let i = 0; i < 12; i++) await h.createKey({ name: `bulk-${i}`, credits: 1 });
    const r = await keys(["revoke", "--url", h.url, "--key", "nope"]);
    expect(r.code).toBe(4);
    const inUse = (await listed()).filter((k) => keyStatus(k) === "active").length;
    expect(r.err).toMatch(new RegExp(`keys in use: (\\S+ \\(\\w+\\), ){9}\\S+ \\(\\w+\\), and ${inUse - 10} more \\(npm run manage-keys -- list\\)`));
  });

  it("revoke: the key gets 401 at once", async () => {
    const { id, key } = await h.createKey({ name: "to-revoke", credits: 5 });
    await chat(key);
    const r = await keys(["revoke", "--url", h.url, "--key", "to-revoke"]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(new RegExp(`^Revoked key to-revoke \\(${id}\\) at \\S+; it now gets 401`));
    const err = await chat(key).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((err as { status?: number }).status).toBe(401);
    expect((await listed()).find((k) => k.id === id)?.revoked_at).not.toBeNull();
    // Again: done already, so exit 0 (a rotation script run twice does not fail), saying when.
    const revokedAt = (await listed()).find((k) => k.id === id)!.revoked_at!;
    const again = await keys(["revoke", "--url", h.url, "--key", id]);
    expect(again.code, again.err).toBe(0);
    expect(again.out).toBe(`Key to-revoke (${id}) was already revoked, at ${revokedAt.replace(/\.\d+Z$/, "Z")}; nothing changed.`);
    expect((await listed()).find((k) => k.id === id)!.revoked_at).toBe(revokedAt);
  });

  it("update: another tier, allow-list and expiry for a key in use, by name; its balance and secret stay, and the next request has them", async () => {
    const { id, key } = await h.createKey({ name: "to-update", credits: 5, tier: "developer", models: ["bge-m3"] });
    await expect(chat(key)).rejects.toBeInstanceOf(OpenAI.PermissionDeniedError);
    const r = await keys(["update", "--url", h.url, "--key", "to-update", "--tier", "pro", "--models", "qwen2.5-7b", "--expires-at", "2099-01-01"]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toBe(`Updated key to-update (${id}): tier pro, models qwen2.5-7b, expires 2099-01-01T00:00:00Z. Its next request has them; its balance (5) and usage are unchanged.`);
    expect((await chat(key)).choices[0]?.message.content).toBeTruthy(); // the same secret, the new allow-list
    expect((await listed()).find((k) => k.id === id)).toMatchObject({ tier: "pro", models: ["qwen2.5-7b"], expires_at: "2099-01-01T00:00:00.000Z" });

    const json = await keys(["update", "--url", h.url, "--key", id, "--all-models", "--no-expiry", "--json"]);
    expect(json.code, json.err).toBe(0);
    expect(JSON.parse(json.out)).toMatchObject({ id, tier: "pro", models: null, expires_at: null });
    const text = await keys(["update", "--url", h.url, "--key", id, "--tier", "free"]);
    expect(text.out).toMatch(/^Updated key to-update \(\w+\): tier free, every model, no expiry\./);
  });

  it("update: nothing to change, or two flags that contradict each other, is refused before anything is sent; the API's refusals are told as they are", async () => {
    const { id } = await h.createKey({ name: "update-refused", credits: 1, tier: "developer" });
    // Exit 2: the command line alone is wrong; 4: the tenant's keys or the API refuse it.
    const refused = async (argv: string[], message: string | RegExp, code = 2) => {
      const r = await keys(["update", "--url", h.url, ...argv]);
      expect(r.code, argv.join(" ")).toBe(code);
      expect(r.err).toMatch(message);
    };
    await refused(["--key", id], /give at least one of --name, --tier, --models, --all-models, --expires-at, --no-expiry/);
    await refused(["--tier", "pro"], /--key is required/);
    await refused(["--key", id, "--models", "qwen2.5-7b", "--all-models"], "--models and --all-models contradict each other: give one");
    await refused(["--key", id, "--expires-at", "2099-01-01", "--no-expiry"], "--expires-at and --no-expiry contradict each other: give one");
    await refused(["--key", id, "--models", " , "], /--models has no model names/);
    await refused(["--key", id, "--expires-at", "next week"], /--expires-at "next week" must be an ISO timestamp/);
    await refused(["--key", id, "--credits", "5"], /--credits does not go with update; update takes: --key, --name, --tier, --models, --all-models, --expires-at, --no-expiry/);
    await refused(["--key", id, "--name", " "], "--name is empty: a key needs a name");
    const holder = await h.createKey({ name: "id-holder" });
    await refused(["--key", id, "--name", holder.id], `--name "${holder.id}" is the id of another key (id-holder), and --key "${holder.id}" would always mean that key: choose another --name`, 4);
    await refused(["--key", id, "--tier", "gold"], /admin API PATCH \/admin\/keys\/\w+ failed: 400 invalid_request: 'tier' must be one of: free, developer, pro, enterprise\./, 4);
    expect((await listed()).find((k) => k.id === id)).toMatchObject({ tier: "developer", models: null, expires_at: null });
    await keys(["revoke", "--url", h.url, "--key", id]);
    await refused(["--key", id, "--tier", "pro"], /409 key_inactive: This key is revoked: only its name can be changed/, 4);
  });

  it("update --name: a person's name replaced by a pseudonym, on a key in use and on a revoked one; its balance, usage and secret stay", async () => {
    const { id, key } = await h.createKey({ name: "Ann Example", credits: 5, tier: "developer" });
    await chat(key);
    const r = await keys(["update", "--url", h.url, "--key", "Ann Example", "--name", "attendee-12"]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(new RegExp(`^Renamed key ${id} from "Ann Example" to "attendee-12"\\. Its secret, balance \\([\\d.]+\\) and usage are unchanged\\.`));
    expect(r.out).toContain("docs/privacy.md");
    expect((await keys(["update", "--url", h.url, "--key", "attendee-12", "--tier", "pro"])).code).toBe(0); // the new name finds it
    await keys(["revoke", "--url", h.url, "--key", id]);
    const erased = await keys(["update", "--url", h.url, "--key", "attendee-12", "--name", "erased-12", "--json"]);
    expect(erased.code, erased.err).toBe(0);
    expect(JSON.parse(erased.out)).toMatchObject({ id, name: "erased-12", tier: "pro", revoked_at: expect.any(String) });
    expect(JSON.stringify(await listed())).not.toContain("Ann Example");
    const other = await h.createKey({ name: "in-use-name" });
    const taken = await keys(["update", "--url", h.url, "--key", id, "--name", "in-use-name"]);
    expect([taken.code, taken.err]).toEqual([4, expect.stringContaining(`409 key_name_in_use: Another key in use is named "in-use-name" (id ${other.id})`)]);
  });

  it("update --name against a shim older than renames (its 400 for an unknown field) says to upgrade the shim", async () => {
    const old = await olderShim(() => ({ status: 400, message: "Unknown field 'name'. Known fields: tier, models, expires_at, expiresAt.", code: "invalid_request" }));
    try {
      const r = await keys(["update", "--url", old.url, "--key", "team-07", "--name", "erased-7"]);
      expect(r.code).toBe(4);
      expect(r.lastLine).toBe("this shim predates `update --name` (a key's name in PATCH /admin/keys/{id}): upgrade it (pulumi up); nothing was changed");
    } finally {
      old.close();
    }
  });

  it("update against a shim older than PATCH /admin/keys/{id} (its 405) says to upgrade the shim", async () => {
    // What a shim of before `update` answers: the route has DELETE only (its 405, with Allow).
    const old = await olderShim(() => ({ status: 405, headers: { allow: "DELETE" }, message: "This method is not allowed on this path. Allowed: DELETE.", code: "method_not_allowed" }));
    try {
      const r = await keys(["update", "--url", old.url, "--key", "team-07", "--tier", "pro"]);
      expect(r.code).toBe(4);
      expect(r.lastLine).toBe("this shim predates `update` (PATCH /admin/keys/{id}): upgrade it (pulumi up)");
    } finally {
      old.close();
    }
  });

  it("a wrong admin token: a clear error and exit 4 (refused)", async () => {
    const r = await keys(["list", "--url", h.url], { env: { GPU_SANDBOX_ADMIN_TOKEN: "not-the-token" } });
    expect(r.code).toBe(4);
    expect(r.err).toContain("admin API GET /admin/keys failed: 401 invalid_admin_token: Invalid admin token.");
    expect(r.err).toContain("Check the admin token ($GPU_SANDBOX_ADMIN_TOKEN). A local `npm run shim` makes a new admin token at each start");
    expect(r.err).not.toMatch(/\n\s+at /);
    const named = await keys(["list", "--url", h.url, "--admin-token-env", "ACME_ADMIN"], { env: { ACME_ADMIN: "wrong" } });
    expect(named.code).toBe(4);
    expect(named.err).toContain("Check the admin token ($ACME_ADMIN).");
  });

  it("--stack takes the URL and admin token from the stack's outputs (with --show-secrets)", async () => {
    const pulumi = new FakePulumi({ acme: { outputs: { endpoint: `${h.url}/v1`, adminToken: h.adminToken, region: "us-ord" } }, fresh: { outputs: {} } });
    const r = await keys(["list", "--stack", "acme"], { env: {}, pulumi });
    expect(r.code, r.err).toBe(0);
    expect(r.out.split("\n")[0]).toMatch(/^ID +NAME/);
    expect(pulumi.calls.map((c) => c.args)).toEqual([["stack", "output", "--json", "--stack", "acme", "--show-secrets"]]);

    const notDeployed = await keys(["list", "--stack", "fresh"], { env: {}, pulumi });
    expect(notDeployed.code).toBe(2);
    expect(notDeployed.err).toContain("stack fresh is not deployed (no outputs); run `pulumi up --stack fresh`");
    const missing = await keys(["list", "--stack", "nope"], { env: {}, pulumi });
    expect(missing.err).toContain("stack nope is not in the Pulumi backend");
    // Pulumi's own failure (a passphrase not given, a backend out of reach): exit 1, not 2 (the command line is right).
    pulumi.stacks.set("locked", { outputError: "passphrase must be set with PULUMI_CONFIG_PASSPHRASE" });
    const unreadable = await keys(["list", "--stack", "locked"], { env: {}, pulumi });
    expect(unreadable.code, unreadable.err).toBe(1);
    expect(unreadable.err).toContain("cannot read stack locked's outputs: ");
    pulumi.installed = false;
    const noCli = await keys(["list", "--stack", "acme"], { env: {}, pulumi });
    expect(noCli.err).toContain("--stack needs the pulumi CLI, which is not on PATH; use --url <endpoint> with GPU_SANDBOX_ADMIN_TOKEN instead");
  });

  it("an unreachable endpoint names the URL and the cause", async () => {
    const port = await freePort();
    const r = await keys(["list", "--url", `http://127.0.0.1:${port}/v1`]);
    expect(r.code).toBe(3);
    expect(r.err).toContain(`cannot reach the admin API at http://127.0.0.1:${port}/admin/keys:`);
    expect(r.err).toContain("ECONNREFUSED");
  });

  it.each([
    [["list", "--url", "URL", "--admin-token", "x"], "--admin-token is not accepted: the admin token would be kept in shell history"],
    [["list"], "--stack <name> or --url <base URL> is required"],
    [["list", "--stack", "a", "--url", "URL"], "use either --stack or --url, not both"],
    [["rekey", "--url", "URL"], '"rekey" is not a command; use one of: create, list, history, revoke, rotate, top-up, update, write-off'],
    [["lst", "--url", "URL"], '"lst" is not a command. Did you mean list? Use one of: create, list, history, revoke, rotate, top-up, update, write-off'],
    [["--url", "URL", "revok", "--key", "x"], '"revok" is not a command. Did you mean revoke? Use one of: create, list, history, revoke, rotate, top-up, update, write-off'],
    // `npm run manage-keys list --url URL`, no `--`: npm keeps --url and passes its value on.
    [["list", "URL"], "is not a command; use one of: create, list, history, revoke, rotate, top-up, update, write-off\nflags typed before `--` are kept by npm, not passed on: npm run manage-keys -- <command> (--stack <name> | --url <base URL>) [options]"],
    [[], "a command is required"],
    [["create", "--url", "URL"], "--name is required: the key's name"],
    [["create", "--url", "URL", "--name", "x", "--credits", "1.1234567"], '--credits "1.1234567" must be a non-negative number of credits with at most 6 decimals'],
    [["top-up", "--url", "URL", "--key", "x", "--amount=-5"], '--amount "-5" must be a positive number of credits'],
    [["top-up", "--url", "URL", "--key", "x", "--amount", "0"], '--amount "0" must be a positive number of credits'],
    // A value starting with "-" after a space is the flag's value, checked as with "=" (parseArgs
    // called it ambiguous and printed the whole usage).
    [["create", "--url", "URL", "--name", "x", "--credits", "-5"], '--credits "-5" must be a non-negative number of credits'],
    [["top-up", "--url", "URL", "--key", "x", "--amount", "-5"], '--amount "-5" must be a positive number of credits'],
    [["top-up", "--url", "URL", "--key", "x", "--amount", "10000000000"], '--amount "10000000000" must be at most 1000000000 credits, e.g. 250'],
    [["top-up", "--url", "URL", "--key", "x"], "--amount is required"],
    [["list", "--url", "URL", "--amount", "5"], "--amount does not go with list"],
    [["revoke", "--url", "URL", "--key", "no-such-key"], '--key "no-such-key": no key with that id or name; keys in use:', 4],
    [["create", "--url", "URL", "--name", "x", "--tier", "gold"], "400 invalid_request: 'tier' must be one of:", 4],
    [["create", "--url", "URL", "--name", "x", "--expires-at", "2099-01-15T10:00:00"], '--expires-at "2099-01-15T10:00:00" must be an ISO timestamp with its zone'],
    [["create", "--url", "URL", "--name", "x", "--expires-at", "2099-04-31"], "--expires-at: 2099-04-31 is not a day: April 2099 has 30 days"],
    [["list", "--url", "ftp://example.com"], '--url "ftp://example.com" must start with https:// or http://'],
  ] as [string[], string, number?][])("%j → exit 2 (4: refused by the tenant's keys or the API): %s", async (argv, message, code = 2) => {
    const r = await keys(argv.map((a) => (a === "URL" ? h.url : a)));
    expect(r.code).toBe(code);
    expect(r.err).toContain(message);
    expect(r.err).not.toMatch(/\n\s+at /);
  });

  it.each([
    // A forgotten value before a flag, known or mistyped: not taken as the value (the note
    // "--amout" and a stray "5"), and said in one line, not parseArgs' advice and the usage.
    [["top-up", "--url", "URL", "--key", "x", "--note", "--amout", "5"], '--note is followed by "--amout", not a value; for a value starting with "-", write --note=--amout'],
    [["top-up", "--url", "URL", "--key", "x", "--note", "--amount", "5"], '--note is followed by "--amount", not a value; for a value starting with "-", write --note=--amount'],
    [["list", "--url", "-h"], '--url is followed by "-h", not a value; for a value starting with "-", write --url=-h'],
  ])("%j → exit 2 in one line: %s", async (argv, message) => {
    const r = await keys(argv.map((a) => (a === "URL" ? h.url : a)));
    expect(r.code).toBe(2);
    expect(r.err).toBe(message);
  });

  it("the admin token must be in the environment, and not empty (an export of a file that was not there)", async () => {
    for (const env of [{}, { GPU_SANDBOX_ADMIN_TOKEN: "" }]) {
      const r = await keys(["list", "--url", h.url], { env });
      expect(r.code).toBe(2);
      expect(r.err).toContain("GPU_SANDBOX_ADMIN_TOKEN is not set: export the tenant's admin token in it (`pulumi stack output adminToken --show-secrets`; a local `npm run shim` prints its own at start)");
    }
  });

  it("a flag given twice is refused, naming it, before anything is sent (not the last one silently)", async () => {
    const a = await h.createKey({ name: "twice-a", credits: 1 });
    const b = await h.createKey({ name: "twice-b", credits: 1 });
    const r = await keys(["top-up", "--url", h.url, "--key", a.id, "--amount", "5", "--key", b.id, "--amount=50"]);
    expect(r.code).toBe(2);
    expect(r.err).toBe("--key is given 2 times, --amount 2 times: give each once");
    const after = await listed();
    expect([a.id, b.id].map((id) => after.find((k) => k.id === id)?.balance)).toEqual([1, 1]);
    // A boolean too, and its short form with the long one.
    const help = await keys(["list", "--url", h.url, "-h", "--help"]);
    expect(help.code).toBe(2);
    expect(help.err).toBe("--help is given 2 times: give it once");
  });

  it("--help", async () => {
    const r = await keys(["--help"]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("Usage: npm run manage-keys -- <command> (--stack <name> | --url <base URL>)");
  });
});

describe("manage-keys: mistakes refused before anything is sent, and a secret given by mistake never printed", () => {
  // A Pulumi-made admin token is 48 letters and digits: most are also valid variable names.
  const TOKEN = "Xk3v9QzT7mPw2LrB8nYc4HdFXk3v9QzT7mPw2LrB8nYc4HdF";

  it("an admin token given as --admin-token-env's value (the variable's name belongs there) is not printed, and the message says so", async () => {
    for (const [given, env] of [
      [TOKEN, {}], // `--admin-token-env "$(pulumi stack output adminToken --show-secrets)"`
      [`7${TOKEN.slice(1)}`, {}], // starts with a digit: not a variable name either
      ["Zq8XkP3vN7mW2tR5yB4c", {}], // a short one: a variable name by its form, and not set
      [h.adminToken, { GPU_SANDBOX_ADMIN_TOKEN: h.adminToken }], // the token itself, set where it belongs
    ] as const) {
      const r = await keys(["list", "--url", h.url, "--admin-token-env", given], { env });
      expect(r.code).toBe(2);
      expect(r.err).not.toContain(given);
      expect(r.err).toContain("--admin-token-env");
      expect(r.err).toMatch(/the name of (the|an) environment variable/);
    }
    const long = await keys(["list", "--url", h.url, "--admin-token-env", TOKEN], { env: {} });
    expect(long.err).toContain("looks like a token, not a variable name");
    // A variable's name that is set still works, however long.
    const name = "GPU_SANDBOX_ADMIN_TOKEN_OF_TENANT_ACME_PRODUCTION";
    const named = await keys(["list", "--url", h.url, "--admin-token-env", name], { env: { [name]: h.adminToken } });
    expect(named.code, named.err).toBe(0);
    // And one that is not set is called what it is (a name, with _), not a token.
    const unset = await keys(["list", "--url", h.url, "--admin-token-env", name], { env: {} });
    expect(unset.err).toMatch(/^the variable --admin-token-env names is not set: export the tenant's admin token in it/);
  });

  it("create refuses a --name that is another key's id: --key <that name> would act on the other key", async () => {
    const other = await h.createKey({ name: "id-holder", credits: 1 });
    const r = await keys(["create", "--url", h.url, "--name", other.id, "--credits", "1"]);
    expect(r.code).toBe(4);
    expect(r.err).toBe(`--name "${other.id}" is the id of another key (id-holder), and --key "${other.id}" would always mean that key: choose another --name`);
    expect((await listed()).filter((k) => k.name === other.id)).toEqual([]);
    // A revoked key's id too: --key matches ids first, revoked or not.
    const revoked = await h.createKey({ name: "revoked-id-holder", credits: 1 });
    expect((await keys(["revoke", "--url", h.url, "--key", revoked.id])).code).toBe(0);
    const again = await keys(["create", "--url", h.url, "--name", revoked.id, "--credits", "1"]);
    expect(again.code).toBe(4);
    expect(again.err).toContain(`--name "${revoked.id}" is the id of another key (revoked-id-holder)`);
  });

  it("a --name over 200 characters is refused before anything is sent, saying the limit (it was told \"'name' is required\")", async () => {
    const long = await keys(["create", "--url", h.url, "--name", "n".repeat(300), "--credits", "1"]);
    expect(long.code).toBe(2);
    expect(long.err).toBe("--name has 300 characters: a key's name is at most 200");
    expect((await listed()).filter((k) => k.name.startsWith("nnn"))).toEqual([]);
  });

  it("an --idempotency-key of 201 characters is refused before anything is sent; 200 are taken", async () => {
    const { id } = await h.createKey({ name: "idem-bound", credits: 1 });
    const long = await keys(["top-up", "--url", h.url, "--key", id, "--amount", "1", "--idempotency-key", "k".repeat(201)]);
    expect(long.code).toBe(2);
    expect(long.err).toBe("--idempotency-key must be at most 200 characters");
    expect((await keys(["top-up", "--url", h.url, "--key", id, "--amount", "1", "--idempotency-key", "k".repeat(200)])).code).toBe(0);
  });

  it("top-up refuses an empty --idempotency-key and a --note the shim would refuse, before printing a retry command that could never succeed", async () => {
    const { id } = await h.createKey({ name: "checked-first", credits: 1 });
    const empty = await keys(["top-up", "--url", h.url, "--key", id, "--amount", "1", "--idempotency-key="]);
    expect(empty.code).toBe(2);
    expect(empty.err).toBe("--idempotency-key is empty: give a key, e.g. invoice-1042, or leave the flag out to have one generated");
    const long = await keys(["top-up", "--url", h.url, "--key", id, "--amount", "1", "--note", "x".repeat(501)]);
    expect(long.code).toBe(2);
    expect(long.err).toBe("--note has 501 characters: the admin API takes at most 500");
    const bell = await keys(["top-up", "--url", h.url, "--key", id, "--amount", "1", "--note", "invoice\u0007 1042"]);
    expect(bell.code).toBe(2);
    expect(bell.err).toBe('--note has "\\u0007" (U+0007) at character 8: the admin API takes a note of plain text, without control characters other than tabs and line breaks');
    expect((await listed()).find((k) => k.id === id)?.balance).toBe(1);
    // 500 characters, as a person counts them (an emoji is one), are taken.
    const most = await keys(["top-up", "--url", h.url, "--key", id, "--amount", "1", "--note", "\u{1F4B6}".repeat(500)]);
    expect(most.code, most.err).toBe(0);
  });

  it.each([
    ["/v1/models", "a full API path"], ["/v1/chat/completions/", "another"], ["/api/v1/models", "one under a base path"], ["/admin", "the admin API's own path"], ["/admin/keys", "an admin route"],
  ])("a --url ending in %s (%s) is refused, saying what it should be, not blamed on the admin token", async (path) => {
    const r = await keys(["list", "--url", `${h.url}${path}`]);
    expect(r.code).toBe(2);
    expect(r.err).toBe(`--url "${h.url}${path}" must be the tenant's endpoint, https://<host> or https://<host>/v1, not a route under it`);
  });

  it.each(["https://admin:s3cr/et@host.example/v1", "https://admin:abc/def+ghi=@host.example/v1", "https://admin:p@ss/w:rd@host.example/v1"])(
    "a --url whose password has a / (base64), so that it is no URL, is refused without showing the password (%#)", (url) => {
      const refusal = (() => {
        try {
          originOf(url, "--url");
        } catch (e) {
          return (e as Error).message;
        }
      })();
      expect(refusal).toMatch(/^--url /);
      for (const secret of ["s3cr", "def+ghi", "ss/w"]) expect(refusal).not.toContain(secret);
    });

  it("a --url with a user name alone (a token put there) is refused without showing it; one that is no URL past an @ in its password shows none of it", () => {
    const refusal = (url: string) => {
      try {
        originOf(url, "--url");
      } catch (e) {
        return (e as Error).message;
      }
    };
    expect(refusal("https://sk-gs-secret@host.example/v1")).toBe("--url has a user name or password in it (user:password@host), which the scripts do not send (the admin token is the credential): give the URL without it");
    const cut = refusal("https://admin:p@ss:w/rd@host.example/v1"); // port "w": no URL
    expect(cut).toMatch(/is not a URL/);
    expect(cut).not.toContain("ss:w");
  });

  it("a --url with a query or #fragment is refused, as smoke-test refuses it, not silently cut off", () => {
    for (const url of ["https://h.example/v1?x=1", "https://h.example?x", "https://h.example/v1#top", "https://h.example/v1?", "https://h.example/v1#"]) {
      expect(() => originOf(url, "--url")).toThrow(`--url "${url}" must be the tenant's endpoint, https://<host> or https://<host>/v1, without a query or #fragment`);
    }
  });

  it("a --url with a base path of a proxy of one's own (…/api/v1) is kept: the admin API is asked under it", () => {
    for (const url of ["https://gw.example/api/v1", "https://gw.example/api/v1/", "https://gw.example/api"]) expect(originOf(url, "--url")).toBe("https://gw.example/api");
    for (const url of ["https://h.example", "https://h.example/", "https://h.example/v1", "https://h.example/v1/", "https://h.example//", "https://h.example/v1//"]) expect(originOf(url, "--url")).toBe("https://h.example");
  });

  it("a --url with a user name and password is refused without printing them; as the endpoint or with /v1/ it works", async () => {
    const withCredentials = h.url.replace("://", "://admin:s3cret@");
    const r = await keys(["list", "--url", `${withCredentials}/v1`]);
    expect(r.code).toBe(2);
    expect(r.err).not.toContain("s3cret");
    expect(r.err).toBe("--url has a user name or password in it (user:password@host), which the scripts do not send (the admin token is the credential): give the URL without it");
    for (const url of [h.url, `${h.url}/`, `${h.url}/v1/`]) expect((await keys(["list", "--url", url])).code).toBe(0);
  });
});

describe("manage-keys: the tenant's nginx answers 429 (its per-address limit covers /admin)", () => {
  it("top-up waits its Retry-After, says so on stderr, and sends it again, applied once", async () => {
    const { id } = await h.createKey({ name: "rate-limited-topup", credits: 10 });
    let refused = 0;
    const front = await frontProxy(h.url, (method) => (method === "POST" && refused++ === 0 ? "rate-limited" : "forward"));
    try {
      const r = await keys(["top-up", "--url", front.url, "--key", id, "--amount", "250", "--idempotency-key", "inv-429"]);
      expect(r.code).toBe(0);
      expect(r.err).toContain(`admin API POST /admin/keys/${id}/credits: 429 rate_limit_exceeded: Too many requests from your address; retry after 1 second. Waiting 1 s, then sending it again (retry 1 of 5)…`);
      expect((await listed()).find((k) => k.id === id)!.balance).toBe(260);
    } finally {
      front.close();
    }
  });
});

describe("manage-keys: a write whose answer is lost after the shim acted", () => {
  /** A front to the test's shim that does `answer` to the shim's answer to every POST matching `path`. */
  const losing = (path: RegExp, answer: FrontAnswer) => frontProxy(h.url, (method, url) => (method === "POST" && path.test(url) ? answer : "forward"));
  const balanceOf = async (id: string) => (await listed()).find((k) => k.id === id)!.balance;

  it.each(["drop", "gateway-timeout"] as const)("top-up (%s): the last line says it may have been applied and gives the one safe retry, which adds nothing twice", async (answer) => {
    const { id } = await h.createKey({ name: `lost-topup-${answer}`, credits: 10 });
    const front = await losing(/\/credits$/, answer);
    try {
      const r = await keys(["top-up", "--url", front.url, "--key", id, "--amount", "250", "--note", "invoice 1042", "--idempotency-key", `inv-${answer}`]);
      expect(r.code).toBe(5);
      expect(await balanceOf(id)).toBe(260); // applied, though the operator never heard so
      const retry = `npm run manage-keys -- top-up --url=${front.url} --key=${id} --amount=250 --note='invoice 1042' --idempotency-key=inv-${answer}`;
      expect(r.io.stderr[0]).toBe(`Idempotency-Key: inv-${answer}; to retry safely: ${retry}`);
      expect(r.err).not.toContain("cannot reach");
      expect(r.err).toContain(answer === "drop" ? `no answer from the admin API to POST ${front.url}/admin/keys/${id}/credits, after the request was sent` : "failed: 504");
      expect(r.lastLine).toBe(`The top-up may have been applied. Retry it with the same Idempotency-Key, which adds the credits at most once: ${retry}`);
    } finally {
      front.close();
    }
  });

  // The printed command, run as printed through a real shell's quoting, is the same request: the
  // shim answers from its first reply. A value that starts with "-" parses only as --note=<value>.
  it.each([
    ["an apostrophe and spaces", "Bob's invoice 1042", "inv-1042's"],
    ["unicode", "Rechnung für März — 1042", "inv#1042&x"],
    ["a leading dash", "-10% promo credit", "-promo-7"],
  ])("the printed retry with a note or key with %s, pasted into bash, parses and credits once", async (_what, note, idem) => {
    const { id } = await h.createKey({ name: `retry-${Math.random().toString(36).slice(2, 8)}`, credits: 10 });
    const front = await losing(/\/credits$/, "drop");
    try {
      const r = await keys(["top-up", "--url", front.url, "--key", id, "--amount", "250", `--note=${note}`, `--idempotency-key=${idem}`]);
      expect(r.code).toBe(5);
      expect(await balanceOf(id)).toBe(260);
      const retry = r.lastLine!.replace(/^.*adds the credits at most once: /, "");
      const again = await keys(shellWords(retry).map((a) => a.replace(front.url, h.url)));
      expect(again.err.split("\n")[0]).toBe(`Idempotency-Key: ${idem}; to retry safely: ${retry.replace(front.url, h.url)}`); // not a parse error
      expect(again.code, again.err).toBe(0);
      expect(again.out).toContain("Already applied with this Idempotency-Key; nothing added.");
      expect(await balanceOf(id)).toBe(260);
    } finally {
      front.close();
    }
  });

  it("create: the error says a key by that name may have been made, and how to find and revoke it", async () => {
    const front = await losing(/^\/admin\/keys$/, "drop");
    try {
      const r = await keys(["create", "--url", front.url, "--name", "lost-create", "--credits", "500"]);
      expect(r.code).toBe(5);
      const made = (await listed()).filter((k) => k.name === "lost-create");
      expect(made.map((k) => k.balance)).toEqual([500]); // a live key with 500 credits whose secret nobody has
      expect(r.lastLine).toBe(`A key named "lost-create" may have been created (its secret was only in the lost answer, and a second create would make a second key): ` +
        `run npm run manage-keys -- list --url=${front.url}, and if a key named "lost-create" that you do not know of is there, revoke it with npm run manage-keys -- revoke --url=${front.url} --key <its id>.`);
    } finally {
      front.close();
    }
  });

  it("top-up with no answer within the client's timeout: may have been applied, with the retry", async () => {
    const { id } = await h.createKey({ name: "timed-out", credits: 10 });
    // As AbortSignal.timeout(30 s) ends a fetch; the POST went out, the wait for its answer did not end well.
    const timingOut: typeof fetch = async (url, init) => {
      if (init?.method !== "POST") return fetch(url, init);
      throw new DOMException("The operation was aborted due to timeout", "TimeoutError");
    };
    const io = memoryIo();
    const client = adminClient({ baseUrl: h.url, adminToken: h.adminToken, source: "test" }, timingOut);
    const run = runCommand("top-up", { url: h.url, key: id, amount: "5", "idempotency-key": "inv-timeout" }, client, io);
    await expect(run).rejects.toThrow(`no answer from the admin API to POST ${h.url}/admin/keys/${id}/credits within 30 s, after the request was sent\n` +
      `The top-up may have been applied. Retry it with the same Idempotency-Key, which adds the credits at most once: npm run manage-keys -- top-up --url=${h.url} --key=${id} --amount=5 --idempotency-key=inv-timeout`);
  });

  it("a write that was never sent (connection refused) says only that: nothing to check or revoke", async () => {
    const port = await freePort();
    const r = await keys(["create", "--url", `http://127.0.0.1:${port}`, "--name", "never-sent"]);
    expect(r.code).toBe(3);
    expect(r.err).toBe(`cannot reach the admin API at http://127.0.0.1:${port}/admin/keys: connect ECONNREFUSED 127.0.0.1:${port}`);
  });
});

describe("manage-keys: a value that cannot go in a header (a typographic dash pasted in)", () => {
  const balanceOf = async (id: string) => (await listed()).find((k) => k.id === id)!.balance;

  it("--idempotency-key: refused up front, in one line, naming the character; nothing is sent", async () => {
    const { id } = await h.createKey({ name: "idem-dash", credits: 10 });
    const r = await keys(["top-up", "--url", h.url, "--key", id, "--amount", "5", "--idempotency-key", "invoice—1042"]);
    expect(r.code).toBe(2);
    expect(r.err).toBe('--idempotency-key has "—" (U+2014) at character 8: use printable ASCII, e.g. invoice-1042');
    expect(await balanceOf(id)).toBe(10);
    const padded = await keys(["top-up", "--url", h.url, "--key", id, "--amount", "5", "--idempotency-key", "invoice 1042 "]);
    expect(padded.err).toBe("--idempotency-key starts or ends with a space: give it without, e.g. invoice-1042");
    expect(await balanceOf(id)).toBe(10);
  });

  it("--idempotency-key with a space inside (the shim takes any key): a top-up made with it can be retried with it, adding nothing", async () => {
    const { id } = await h.createKey({ name: "idem-space", credits: 10 });
    const first = await h.admin(`/admin/keys/${id}/credits`, { method: "POST", headers: { "content-type": "application/json", "idempotency-key": "invoice 1042" }, body: JSON.stringify({ amount: "250" }) });
    expect(first.status).toBe(200);
    const r = await keys(["top-up", "--url", h.url, "--key", id, "--amount", "250", "--idempotency-key", "invoice 1042"]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain("Already applied with this Idempotency-Key");
    expect(await balanceOf(id)).toBe(260);
  });

  it("an admin token with whitespace at its ends (a CRLF env file) works, as fetch strips it from the header anyway", async () => {
    for (const token of [`${h.adminToken}\r`, `${h.adminToken}\n`, ` ${h.adminToken}`]) {
      const r = await keys(["list", "--url", h.url], { env: { GPU_SANDBOX_ADMIN_TOKEN: token } });
      expect(r.code, r.err).toBe(0);
    }
  });

  it("the admin token: refused up front, in one line, before a create (no 'a key may have been created')", async () => {
    const before = (await listed()).length;
    const r = await keys(["create", "--url", h.url, "--name", "bad-token"], { env: { GPU_SANDBOX_ADMIN_TOKEN: "adm—tok" } });
    expect(r.code).toBe(2);
    expect(r.err).toBe('the admin token ($GPU_SANDBOX_ADMIN_TOKEN) has "—" (U+2014) at character 4, which no admin token has (printable ASCII only): ' +
      "was it pasted with a typographic dash or quote? Copy it again, e.g. from `pulumi stack output adminToken --show-secrets`");
    expect((await listed()).length).toBe(before);
  });

  it("a request fetch refuses to send is reported as never sent, not as a top-up that may have been applied", async () => {
    const { id } = await h.createKey({ name: "fetch-refuses", credits: 10 });
    // As fetch answers a header it cannot encode: a TypeError of its own, not "fetch failed".
    const refusing: typeof fetch = (url, init) => (init?.method === "POST" ? fetch(url, { ...init, headers: { ...(init.headers as Record<string, string>), "x-note": "a—b" } }) : fetch(url, init));
    const client = adminClient({ baseUrl: h.url, adminToken: h.adminToken, source: "test" }, refusing);
    const run = runCommand("top-up", { url: h.url, key: id, amount: "5", "idempotency-key": "inv-refused" }, client, memoryIo());
    const err = (await run.catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(new RegExp(`^POST ${h.url}/admin/keys/${id}/credits was not sent: fetch refused it: Cannot convert argument to a ByteString`));
    expect(err.message).not.toContain("may have been applied");
    expect(await balanceOf(id)).toBe(10);
  });
});

describe("manage-keys: a --url that answers 200 with JSON that is not the API's answer (another service)", () => {
  /** Answers every request 200 `{}`; with `listing`, GET /admin/keys gets the API's list of those keys. */
  async function notTheShim(listing?: ApiKey[]) {
    const server = createServer((req, res) => {
      req.resume();
      const body = listing && req.method === "GET" && req.url === "/admin/keys" ? { object: "list", data: listing } : {};
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() };
  }
  const notIt = (request: string, expected: string) => `admin API ${request} answered 200 but not with ${expected} ({}); is --url the tenant's endpoint?`;

  it("create: no \"Created key undefined\", exit 5, and a key may have been created (the write's outcome is unknown)", async () => {
    const other = await notTheShim([]); // the list create checks names against, then a POST answered {}
    try {
      const r = await keys(["create", "--url", other.url, "--name", "team-x", "--credits", "5"]);
      expect(r.code).toBe(5);
      expect(r.out).toBe("");
      expect(r.err.split("\n")[0]).toBe(notIt("POST /admin/keys", 'an "api_key" object'));
      expect(r.err).toContain('A key named "team-x" may have been created');
    } finally {
      other.close();
    }
  });

  it("list (table and JSON): a sentence and exit 4, not a TypeError", async () => {
    const other = await notTheShim();
    try {
      for (const argv of [["list"], ["list", "--json"]]) {
        const r = await keys([...argv, "--url", other.url]);
        expect(r.code, argv.join(" ")).toBe(4);
        expect(r.out).toBe("");
        expect(r.err).toBe(notIt("GET /admin/keys", 'a "list" of keys'));
      }
    } finally {
      other.close();
    }
  });

  it("revoke and top-up: each answer is checked too; the top-up may have been applied", async () => {
    const { id } = await h.createKey({ name: "elsewhere", credits: 1 });
    const other = await notTheShim((await listed()).filter((k) => k.id === id));
    try {
      const revoke = await keys(["revoke", "--url", other.url, "--key", id]);
      expect(revoke.code).toBe(5);
      expect(revoke.out).toBe("");
      expect(revoke.err).toBe(notIt(`DELETE /admin/keys/${id}`, 'an "api_key" object'));
      const topUp = await keys(["top-up", "--url", other.url, "--key", id, "--amount", "5"]);
      expect(topUp.code).toBe(5);
      expect(topUp.out).toBe("");
      expect(topUp.err).toContain(notIt(`POST /admin/keys/${id}/credits`, 'a "credit_grant" object'));
      expect(topUp.lastLine).toMatch(/^The top-up may have been applied\. Retry it with the same Idempotency-Key/);
    } finally {
      other.close();
    }
  });
});

describe("manage-keys: an endpoint that redirects (http:// to a TLS endpoint)", () => {
  it("is not followed: the error names the https origin to use and says the token crossed plain http", async () => {
    const seen: (string | undefined)[] = [];
    // nginx's port 80 answers 308 to https; here the "https" origin is the shim under another name.
    const target = h.url.replace("127.0.0.1", "localhost");
    const redirect = createServer((req, res) => {
      seen.push(req.headers.authorization);
      res.writeHead(308, { location: `${target}${req.url}` }).end();
    });
    await new Promise<void>((resolve) => redirect.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(redirect.address() as AddressInfo).port}`;
    try {
      const r = await keys(["list", "--url", url]);
      expect(r.code).toBe(4);
      expect(seen).toHaveLength(1); // asked once; the shim behind the redirect is never asked
      expect(r.err).toBe(`the admin API at ${url}/admin/keys redirects to ${target}/admin/keys: use --url ${target}. The admin token was sent over plain http with this request: consider rotating it.`);
      expect(r.err).not.toContain("Check the admin token");
    } finally {
      redirect.close();
    }
  });

  it("a redirect within the same origin (a slash added) offers no --url: says where it points and that --url may not be the shim's", async () => {
    const redirect = createServer((req, res) => res.writeHead(301, { location: `${req.url}/` }).end());
    await new Promise<void>((resolve) => redirect.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(redirect.address() as AddressInfo).port}`;
    try {
      const r = await keys(["list", "--url", url]);
      expect(r.code).toBe(4);
      expect(r.err).toBe(`the admin API at ${url}/admin/keys redirects to ${url}/admin/keys/: --url may not be the shim's endpoint (the shim answers without redirecting). ` +
        "The admin token was sent over plain http with this request: consider rotating it.");
    } finally {
      redirect.close();
    }
  });
});

describe("manage-keys: --url at a server that is not the shim's admin API", () => {
  it("another service's 404 (the fake vLLM's {\"detail\":\"Not Found\"}) says --url is not the shim's admin API and what it should be", async () => {
    const vllm = createServer((_req, res) => res.writeHead(404, { "content-type": "application/json" }).end('{"detail":"Not Found"}'));
    await new Promise<void>((resolve) => vllm.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(vllm.address() as AddressInfo).port}`;
    try {
      const r = await keys(["list", "--url", url]);
      expect(r.code).toBe(4);
      expect(r.err).toBe(`admin API GET /admin/keys failed: 404 {"detail":"Not Found"}\n` +
        `${url} is not the shim's admin API (its 404 is not the shim's error): is --url the tenant's endpoint (https://<host>, or https://<host>/v1)?`);
    } finally {
      vllm.close();
    }
  });

  it("the shim's own 404 (a key id it does not have) is not blamed on --url", async () => {
    const client = adminClient({ baseUrl: h.url, adminToken: h.adminToken, source: "test" });
    const err = await client.revokeKey("key_does_not_exist").then(() => new Error("revoked"), (e: unknown) => e as Error);
    expect(err).toMatchObject({ status: 404 });
    expect(err.message).toMatch(/^admin API DELETE \/admin\/keys\/key_does_not_exist failed: 404 \w+: /);
    expect(err.message).not.toContain("is not the shim's admin API");
  });

  it("https:// at a plain http endpoint says to use http://, not OpenSSL's wrong version number", async () => {
    const url = h.url.replace(/^http:/, "https:");
    const r = await keys(["list", "--url", url]);
    expect(r.code).toBe(3);
    expect(r.err).toBe(`cannot reach the admin API at ${url}/admin/keys: the server speaks plain http, not https: use http:// in the URL (ERR_SSL_WRONG_VERSION_NUMBER)`);
  });
});
