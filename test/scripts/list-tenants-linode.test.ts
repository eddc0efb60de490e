import { mkdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { linodeApiBase } from "../../scripts/lib/linode-api.ts";
import type { LinodeRow } from "../../scripts/lib/linode-check.ts";
import { main } from "../../scripts/list-tenants.ts";
import { type FakeLinode, kitInstance, kitVolume, startFakeLinode } from "../support/fake-linode.ts";
import { freePort, tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";

const urn = (stack: string, type: string, name: string) => `urn:pulumi:${stack}::gpu-sandbox::gpu-sandbox:index:GpuHost$${type}::${name}`;
const INSTANCE = "linode:index/instance:Instance";
const VOLUME = "linode:index/volume:Volume";

/** What `pulumi stack export` holds for a deployed tenant: its instance and volume, by Linode's ids. */
function deployedState(stack: string, instanceId: number, volumeId: number) {
  return [
    { type: "linode:index/firewall:Firewall", urn: urn(stack, "linode:index/firewall:Firewall", `gs-${stack}-fw`), id: "900" },
    { type: INSTANCE, urn: urn(stack, INSTANCE, `gs-${stack}-instance`), id: String(instanceId) },
    { type: VOLUME, urn: urn(stack, VOLUME, `gs-${stack}-volume`), id: String(volumeId) },
  ];
}

/** A project root whose stacks/ has a file for each tenant named. */
function projectWith(...stacks: string[]): string {
  const root = tempDir();
  mkdirSync(join(root, "stacks"));
  for (const s of stacks) writeFileSync(join(root, "stacks", `Pulumi.${s}.yaml`), stringify({ config: { "gpu-sandbox:region": "us-ord", "gpu-sandbox:adminCidrs": ["81.2.69.160/32"] } }));
  return root;
}

let linode: FakeLinode;
beforeEach(async () => {
  linode = await startFakeLinode();
});
afterEach(async () => {
  await linode.close();
});

async function check(argv: string[], options: { root: string; pulumi: FakePulumi; env?: Record<string, string> }) {
  const io = memoryIo();
  const env = options.env ?? { LINODE_TOKEN: linode.token, LINODE_URL: linode.url };
  const code = await main(["--linode", ...argv], { root: options.root, pulumi: options.pulumi, io, env });
  return { code, io, out: io.stdout.join("\n"), err: io.stderr.join("\n") };
}

/**
 * alpha: deployed, its state holds instance 1001 and volume 2001. ghost: no stack file (deleted,
 * or made by hand), instance 1002 and its volume 2002. delta: a stack file, but its state holds
 * nothing (an interrupted first `pulumi up`, or a destroy that lost the instance). The account's
 * own database and its volume carry no gpu-sandbox tag.
 */
const GHOST_REASON = "no stack file stacks/Pulumi.ghost.yaml here, and stack ghost is not in this Pulumi backend (`pulumi stack ls` lists those it has; a tenant deployed from another backend, such as a teammate's, is not seen)";

function world() {
  linode.instances = [
    kitInstance(1001, "alpha"),
    { id: 1009, label: "prod-db", region: "us-ord", type: "g6-standard-2", status: "running", tags: ["prod"], created: "2025-01-01T00:00:00" },
    kitInstance(1002, "ghost", { type: "g2-gpu-rtx4000a2-s", status: "offline" }),
    kitInstance(1003, "delta", { region: "us-sea" }),
  ];
  linode.volumes = [
    kitVolume(2001, "alpha", 1001),
    kitVolume(2002, "ghost", 1002, { size: 200 }),
    { ...kitVolume(2009, "prod", 1009), label: "prod-db-data", tags: [] },
  ];
  const pulumi = new FakePulumi({
    alpha: { outputs: { endpoint: "https://alpha.example.test/v1" }, resources: deployedState("alpha", 1001, 2001) },
    delta: { outputs: {}, resources: [] },
  });
  return { root: projectWith("alpha", "delta"), pulumi };
}

describe("list-tenants --linode: what Linode itself bills for, stack or no stack", () => {
  it("flags a tagged instance and volume that no stack holds, with their cost and how to delete them, and exits 1", async () => {
    const { code, out } = await check([], world());
    expect(code).toBe(1);
    const lines = out.split("\n");
    expect(lines[0]).toMatch(/^KIND +ID +LABEL +TENANT +REGION +PLAN\/SIZE +STATUS +\$\/HOUR +HELD BY$/);
    // The plan's price from the catalog; the volume's is its size × the catalog's price per GB.
    expect(lines.find((l) => l.startsWith("instance  1002"))).toMatch(/^instance +1002 +gs-ghost +ghost +us-ord +g2-gpu-rtx4000a2-s +offline +1\.050 +no stack$/);
    expect(lines.find((l) => l.startsWith("volume    2002"))).toMatch(/^volume +2002 +gs-ghost-data +ghost +us-ord +200 GB +active +0\.027 +no stack$/);
    expect(out).toContain(
      "gs-ghost (instance 1002, tenant ghost, $1.050/hour): no stack holds it (" + GHOST_REASON + "): " +
        "`pulumi destroy` cannot remove it; delete it in Cloud Manager or with `linode-cli linodes delete 1002`",
    );
    // Attached to an instance deleted first, which detaches it.
    expect(out).toContain(
      "gs-ghost-data (volume 2002, tenant ghost, $0.027/hour): no stack holds it (" + GHOST_REASON + "): " +
        "`pulumi destroy` cannot remove it; delete it in Cloud Manager or with `linode-cli volumes delete 2002` once instance 1002 is deleted (which detaches it)",
    );
    // A stack file is not enough: its state must hold that very instance.
    expect(out).toContain("gs-delta (instance 1003, tenant delta, $0.520/hour): no stack holds it (stack delta's state does not hold it): `pulumi destroy` cannot remove it;");
    expect(lines.at(-1)).toBe("3 instances and 2 volumes on Linode tagged gpu-sandbox ($2.13/hour together); 3 that no stack holds: $1.60/hour.");
  });

  it("does not flag what a stack's state holds, and ignores what has no gpu-sandbox tag", async () => {
    const { code, out } = await check([], world());
    expect(code).toBe(1); // ghost and delta
    const lines = out.split("\n");
    expect(lines.find((l) => l.startsWith("instance  1001"))).toMatch(/ gs-alpha +alpha +us-ord +g2-gpu-rtx4000a1-s +running +0\.520 +stack alpha$/);
    expect(lines.find((l) => l.startsWith("volume    2001"))).toMatch(/ gs-alpha-data +alpha +us-ord +100 GB +active +0\.014 +stack alpha$/);
    expect(out).not.toMatch(/gs-alpha(-data)? \(/); // no line telling to delete them
    expect(out).not.toContain("prod-db");
    expect(out).not.toContain("1009");

    // Once ghost and delta are gone: every one held, exit 0.
    linode.instances = linode.instances.filter((i) => [1001, 1009].includes(i.id));
    linode.volumes = linode.volumes.filter((v) => [2001, 2009].includes(v.id));
    const held = await check([], { root: projectWith("alpha", "delta"), pulumi: new FakePulumi({ alpha: { outputs: {}, resources: deployedState("alpha", 1001, 2001) } }) });
    expect(held.code).toBe(0);
    expect(held.out).not.toContain("no stack holds");
    expect(held.out.split("\n").at(-1)).toBe("1 instance and 1 volume on Linode tagged gpu-sandbox, each held by a stack: $0.53/hour together.");
  });

  it("an empty collection answered with pages 0 is read as empty, not refused", async () => {
    linode.answers.set("/v4/volumes", { status: 200, body: JSON.stringify({ data: [], page: 1, pages: 0, results: 0 }) });
    const { code, out } = await check([], { root: projectWith("alpha"), pulumi: new FakePulumi() });
    expect(code).toBe(0);
    expect(out).toBe("Linode holds nothing of the kit's: no instance or volume is tagged gpu-sandbox.");
  });

  it("nothing tagged gpu-sandbox: one line saying Linode holds nothing of the kit's, exit 0", async () => {
    linode.instances = [{ id: 1009, label: "prod-db", region: "us-ord", type: "g6-standard-2", status: "running", tags: ["prod"], created: "2025-01-01T00:00:00" }];
    const { code, out } = await check([], { root: projectWith("alpha"), pulumi: new FakePulumi() });
    expect(code).toBe(0);
    expect(out).toBe("Linode holds nothing of the kit's: no instance or volume is tagged gpu-sandbox.");
  });

  it("--json: a row per tagged instance and volume, with its tenant, cost, the stack that holds it and the commands that delete an orphan", async () => {
    const { code, out } = await check(["--json"], world());
    expect(code).toBe(1);
    const rows = JSON.parse(out) as LinodeRow[];
    expect(rows.map((r) => `${r.kind} ${r.id}`)).toEqual(["instance 1001", "instance 1002", "instance 1003", "volume 2001", "volume 2002"]);
    expect(rows.find((r) => r.id === 1001)).toEqual({
      kind: "instance", id: 1001, label: "gs-alpha", tenant: "alpha", region: "us-ord", plan: "g2-gpu-rtx4000a1-s", sizeGb: null,
      status: "running", created: "2026-03-01T10:00:00", attachedTo: null, hourlyUsd: 0.52, stack: "alpha", held: "held", reason: null, delete: null,
    });
    expect(rows.find((r) => r.id === 2002)).toMatchObject({
      kind: "volume", tenant: "ghost", plan: null, sizeGb: 200, attachedTo: 1002, stack: null, held: "orphaned",
      reason: GHOST_REASON, delete: ["linode-cli volumes delete 2002"],
    });
    expect(rows.find((r) => r.id === 2002)!.hourlyUsd).toBeCloseTo(200 * 0.1 / 730, 6);
    expect(rows.find((r) => r.id === 1003)).toMatchObject({ held: "orphaned", reason: "stack delta's state does not hold it", delete: ["linode-cli linodes delete 1003"] });
  });

  it("a volume attached to an instance a stack holds is detached before it is deleted", async () => {
    const { root, pulumi } = world();
    linode.volumes.push(kitVolume(2003, "alpha", 1001, { label: "gs-alpha-data-old" }));
    const { out } = await check([], { root, pulumi });
    expect(out).toContain("gs-alpha-data-old (volume 2003, tenant alpha, $0.014/hour): no stack holds it (stack alpha's state does not hold it): `pulumi destroy` cannot remove it; " +
      "delete it in Cloud Manager or with `linode-cli volumes detach 2003`, then `linode-cli volumes delete 2003` once it is detached");
  });

  it("one orphan, a volume attached to nothing: deleted at once, no detach; a plan the catalog does not list is priced \"?\" and left out of the total, saying so", async () => {
    linode.instances = [kitInstance(1001, "alpha", { type: "g9-gpu-future-s" })];
    linode.volumes = [kitVolume(2001, "alpha", 1001), kitVolume(2005, "ghost", null)];
    const pulumi = new FakePulumi({ alpha: { outputs: {}, resources: deployedState("alpha", 1001, 2001) } });
    const { code, out } = await check([], { root: projectWith("alpha"), pulumi });
    expect(code).toBe(1);
    const lines = out.split("\n");
    expect(lines.find((l) => l.startsWith("instance  1001"))).toMatch(/ g9-gpu-future-s +running +\? +stack alpha$/);
    expect(lines).toContain("gs-ghost-data (volume 2005, tenant ghost, $0.014/hour): no stack holds it (" + GHOST_REASON + "): " +
      "`pulumi destroy` cannot remove it; delete it in Cloud Manager or with `linode-cli volumes delete 2005`");
    expect(lines.at(-1)).toBe("1 instance and 2 volumes on Linode tagged gpu-sandbox ($0.03/hour together, not counting 1 whose plan infra/catalog.ts does not list); 1 that no stack holds: $0.01/hour.");
  });

  it("reads every page (page_size 500, as many pages as Linode says), and says so on stderr", async () => {
    const { root, pulumi } = world();
    linode.maxPageSize = 2; // Linode caps page_size; here at 2, so 4 instances are 2 pages
    const { code, out, err } = await check(["--json"], { root, pulumi });
    expect(code).toBe(1);
    const rows = JSON.parse(out) as LinodeRow[];
    // 1002 and 1003 are on page 2 of the instances.
    expect(rows.filter((r) => r.kind === "instance").map((r) => r.id)).toEqual([1001, 1002, 1003]);
    expect(rows.filter((r) => r.kind === "volume").map((r) => r.id)).toEqual([2001, 2002]);
    const instancePages = linode.requests.filter((r) => r.path === "/v4/linode/instances");
    expect(instancePages.map((r) => [r.query.get("page"), r.query.get("page_size")])).toEqual([["1", "500"], ["2", "500"]]);
    expect(err).toContain("linode/instances: page 2 of 2");
  });

  it("an instance made between two pages moves the others along: one seen on both pages is listed once", async () => {
    const { root, pulumi } = world();
    const listed = [linode.instances[1]!, linode.instances[0]!, linode.instances[2]!]; // prod-db, 1001, 1002
    linode.maxPageSize = 2;
    const pagesAsked = () => linode.requests.filter((r) => r.path === "/v4/linode/instances").length;
    // From the second page on, a new instance first: 1001 moves from page 1 to page 2.
    Object.defineProperty(linode, "instances", { get: () => (pagesAsked() > 1 ? [kitInstance(1000, "alpha"), ...listed] : listed) });
    const rows = JSON.parse((await check(["--json"], { root, pulumi })).out) as LinodeRow[];
    expect(rows.filter((r) => r.kind === "instance").map((r) => r.id)).toEqual([1001, 1002]);
  });

  it("asks the stack's state (pulumi stack export) of every tagged tenant, a stack file here or not, and nothing but that", async () => {
    const { root, pulumi } = world();
    await check([], { root, pulumi });
    expect(pulumi.calls.map((c) => c.args.join(" ")).sort()).toEqual(["stack export --stack alpha", "stack export --stack delta", "stack export --stack ghost"]);
  });

  it("a tenant whose stack file is not in this checkout but whose stack is in the backend (a teammate's) is held, not given delete commands", async () => {
    const { root, pulumi } = world();
    pulumi.stacks.set("ghost", { outputs: { endpoint: "https://ghost.example.test/v1" }, resources: deployedState("ghost", 1002, 2002) });
    const { code, out } = await check(["--json"], { root, pulumi });
    const rows = JSON.parse(out) as LinodeRow[];
    expect(rows.find((r) => r.id === 1002)).toMatchObject({ held: "held", stack: "ghost", delete: null });
    expect(rows.find((r) => r.id === 2002)).toMatchObject({ held: "held", stack: "ghost", delete: null });
    expect(code).toBe(1); // delta still holds nothing
  });

  it("a stack whose state cannot be read, or no pulumi CLI: cannot tell whether it holds them, exit 1", async () => {
    const { root, pulumi } = world();
    pulumi.script = (args) => (args.includes("alpha") ? { exitCode: 255, stderr: "error: failed to load checkpoint: permission denied\n" } : undefined);
    const unreadable = await check([], { root, pulumi });
    expect(unreadable.code).toBe(1);
    expect(unreadable.out).toMatch(/^instance +1001 +gs-alpha .* cannot tell$/m);
    expect(unreadable.out).toContain("gs-alpha (instance 1001, tenant alpha, $0.520/hour): cannot tell whether stack alpha holds it: error: failed to load checkpoint: permission denied");
    // One that cannot be told is counted in the summary too.
    linode.volumes = linode.volumes.filter((v) => v.id !== 2001);
    const one = await check([], { root, pulumi });
    expect(one.out.split("\n").at(-1)).toBe("3 instances and 1 volume on Linode tagged gpu-sandbox ($2.12/hour together); 3 that no stack holds: $1.60/hour; 1 whose stack's state could not be read.");

    const noCli = world();
    noCli.pulumi.installed = false;
    const rows = JSON.parse((await check(["--json"], noCli)).out) as LinodeRow[];
    expect(rows.find((r) => r.id === 1001)).toMatchObject({ held: "unknown", reason: "no pulumi CLI", stack: null });
    // Without a stack file here a backend's stack may still hold it: without the CLI, no telling.
    expect(rows.find((r) => r.id === 1002)).toMatchObject({ held: "unknown", reason: "no pulumi CLI", delete: null });
    expect(rows.find((r) => r.id === 2002)).toMatchObject({ held: "unknown", delete: null }); // its volume neither
  });

  it("a stack file whose stack is not in the Pulumi backend holds nothing", async () => {
    const { root, pulumi } = world();
    pulumi.stacks.delete("delta");
    const rows = JSON.parse((await check(["--json"], { root, pulumi })).out) as LinodeRow[];
    expect(rows.find((r) => r.id === 1003)).toMatchObject({ held: "orphaned", reason: "stack delta is not in this Pulumi backend (`pulumi stack ls` lists those it has; a tenant deployed from another backend, such as a teammate's, is not seen)" });
  });

  it("without a tenant: tag, the tenant is the stack whose label it has (infra/host.ts resourceNames)", async () => {
    const { root, pulumi } = world();
    linode.instances[0] = { ...linode.instances[0]!, tags: ["gpu-sandbox"] };
    const rows = JSON.parse((await check(["--json"], { root, pulumi })).out) as LinodeRow[];
    expect(rows.find((r) => r.id === 1001)).toMatchObject({ tenant: "alpha", held: "held", stack: "alpha" });
  });
});

describe("list-tenants --linode: what goes wrong is said in one line, exit 2 to 5 as the failure is (bad setting, not reached, refused, answer lost)", () => {
  it("no LINODE_TOKEN: says how to make a read-only one, and asks nothing", async () => {
    const { code, out, err } = await check([], { root: projectWith(), pulumi: new FakePulumi(), env: { LINODE_URL: linode.url } });
    expect(code).toBe(2);
    expect(out).toBe("");
    expect(err).toBe(
      "LINODE_TOKEN is not set: --linode asks Linode's API with it. Make a read-only token in Cloud Manager (your profile → API Tokens → Create A Personal Access Token) " +
        "with Linodes and Volumes set to Read Only and the rest to None, then `export LINODE_TOKEN=…`",
    );
    expect(linode.requests).toEqual([]);
  });

  it("a token Linode refuses (401): says it is wrong or expired, and the read-only scopes of the one to make", async () => {
    const { code, err } = await check([], { root: projectWith(), pulumi: new FakePulumi(), env: { LINODE_TOKEN: "expired", LINODE_URL: linode.url } });
    expect(code).toBe(4);
    expect(err.split("\n")).toHaveLength(1);
    expect(err).toBe(
      `Linode refused LINODE_TOKEN (401 Invalid Token, GET ${linode.url}/v4/linode/instances): it is wrong, expired or revoked. ` +
        "Make a read-only token in Cloud Manager (your profile → API Tokens → Create A Personal Access Token) with Linodes and Volumes set to Read Only and the rest to None, then `export LINODE_TOKEN=…`",
    );
  });

  it.each([
    ["/v4/linode/instances", "Linodes", "linodes:read_only"],
    ["/v4/volumes", "Volumes", "volumes:read_only"],
  ])("a token without the scope (403 on %s): names the scope it lacks", async (path, scope, oauth) => {
    linode.answers.set(path, { status: 403, body: JSON.stringify({ errors: [{ reason: "Your OAuth token is not authorized to use this endpoint." }] }) });
    const { code, err } = await check([], world());
    expect(code).toBe(4);
    expect(err).toBe(
      `LINODE_TOKEN may not read ${scope} (403 Your OAuth token is not authorized to use this endpoint., GET ${linode.url}${path}): ` +
        `give it the ${scope} scope, Read Only is enough (${oauth}), or make a read-only token in Cloud Manager (your profile → API Tokens → Create A Personal Access Token) ` +
        "with Linodes and Volumes set to Read Only and the rest to None, then `export LINODE_TOKEN=…`",
    );
  });

  it("nothing answers at LINODE_URL: the network's reason, in one line", async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const { code, err } = await check([], { root: projectWith(), pulumi: new FakePulumi(), env: { LINODE_TOKEN: "t", LINODE_URL: url } });
    expect(code).toBe(3);
    expect(err).toMatch(new RegExp(`^could not reach Linode's API at ${url}/v4 \\(GET ${url}/v4/linode/instances\\): .*ECONNREFUSED`));
    expect(err.split("\n")).toHaveLength(1);
  });

  it("a request sent whose answer is lost (the connection closed on it): exit 5, not 3 (it reached Linode), with the network's reason", async () => {
    const server = createServer((req) => req.socket.destroy());
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const { code, err } = await check([], { root: projectWith(), pulumi: new FakePulumi(), env: { LINODE_TOKEN: "t", LINODE_URL: url } });
      expect(code, err).toBe(5);
      expect(err).toMatch(new RegExp(`^could not reach Linode's API at ${url}/v4 \\(GET ${url}/v4/linode/instances\\): `));
    } finally {
      server.close();
    }
  });

  it("an answer that is not the API's JSON (a web page at a wrong LINODE_URL): says what came and where", async () => {
    linode.answers.set("/v4/linode/instances", { status: 200, body: "<!doctype html><title>Proxy login</title>", contentType: "text/html" });
    const { code, err } = await check([], world());
    expect(code).toBe(4);
    expect(err).toBe(`GET ${linode.url}/v4/linode/instances answered 200 but not with Linode's JSON (<!doctype html><title>Proxy login</title>); is LINODE_URL (${linode.url}) Linode's API?`);
  });

  it("LINODE_URL with the version in it (404): says it is the address without the version, as the provider reads it", async () => {
    const { code, err } = await check([], { ...world(), env: { LINODE_TOKEN: linode.token, LINODE_URL: `${linode.url}/v4` } });
    expect(code).toBe(4);
    expect(err).toBe(`GET ${linode.url}/v4/v4/linode/instances answered 404 (Not found): is LINODE_URL (${linode.url}/v4) Linode's API? ` +
      "It is the address without the version (https://api.linode.com): LINODE_API_VERSION (v4) is appended to it, as the Linode provider does");
  });

  it("a Linode error (500) says its status and reason", async () => {
    linode.answers.set("/v4/volumes", { status: 500, body: JSON.stringify({ errors: [{ reason: "Please try again" }] }) });
    const { code, err } = await check([], world());
    expect(code).toBe(5);
    expect(err).toBe(`Linode's API answered 500 (Please try again) to GET ${linode.url}/v4/volumes: nothing was listed; try again later`);
  });

  it("Linode's rate limit (429): refused for now only, exit 3 (run it again), as its line says", async () => {
    linode.answers.set("/v4/volumes", { status: 429, body: JSON.stringify({ errors: [{ reason: "Too many requests" }] }) });
    const { code, err } = await check([], world());
    expect(code).toBe(3);
    expect(err).toBe(`Linode's API answered 429 (Too many requests) to GET ${linode.url}/v4/volumes: nothing was listed; try again later`);
  });

  it("a token as a flag is refused: it would land in shell history", async () => {
    const io = memoryIo();
    expect(await main(["--linode", "--linode-token", "x"], { root: projectWith(), pulumi: new FakePulumi(), io, env: {} })).toBe(2);
    expect(io.stderr.join("\n")).toContain("--linode-token is not accepted: a token on the command line lands in shell history; export LINODE_TOKEN");
  });
});

describe("linodeApiBase: where the API is, read as the Linode provider reads it", () => {
  it("LINODE_URL is the API's address and LINODE_API_VERSION (v4) is appended, as the provider (linodego) does", () => {
    expect(linodeApiBase({})).toBe("https://api.linode.com/v4");
    expect(linodeApiBase({ LINODE_URL: "http://127.0.0.1:49841/" })).toBe("http://127.0.0.1:49841/v4");
    expect(linodeApiBase({ LINODE_URL: "https://api.example.test/linode", LINODE_API_VERSION: "v4beta" })).toBe("https://api.example.test/linode/v4beta");
    expect(linodeApiBase({ LINODE_URL: " " })).toBe("https://api.linode.com/v4"); // blank is unset
  });
});
