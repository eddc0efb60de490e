import { execFile, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { type AddressInfo, connect, createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { main as fakeVllm, serveFakeVllm } from "../../scripts/serve-fake-vllm.ts";
import { banner, devEnvironment, main as shim, upstreamWarning } from "../../scripts/start-shim.ts";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { parseShimConfig } from "../../api-shim/src/config.ts";
import { freePort } from "../support/tools.ts";

const scripts = (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { scripts: Record<string, string> }).scripts;

describe("the local servers: npm run shim and npm run fake-vllm", () => {
  it.each([["shim", shim, "start-shim"], ["fake-vllm", fakeVllm, "serve-fake-vllm"]] as const)("npm run %s --help prints its usage and starts nothing", async (name, main, file) => {
    expect(scripts[name]).toBe(`node scripts/${file}.ts`);
    const io = memoryIo();
    expect(await main(["--help"], io)).toBe(0);
    expect(io.stdout.join("\n")).toMatch(new RegExp(`^Usage: npm run ${name}\\n`));
    expect(io.stdout.join("\n")).toContain("Examples:");
    expect(io.stdout.join("\n")).not.toMatch(/listening|admin token \(generated/);
    const bad = memoryIo();
    expect(await main(["--port", "1"], bad)).toBe(2);
    expect(bad.stderr).toEqual([`Unknown option '--port'. (npm run ${name} -- --help lists the options)`]);
  });

  it("npm run shim's usage says where the command works: not inside api-shim/, whose own package.json has no shim script", async () => {
    const apiShimScripts = (JSON.parse(readFileSync(new URL("../../api-shim/package.json", import.meta.url), "utf8")) as { scripts: Record<string, string> }).scripts;
    expect(apiShimScripts).not.toHaveProperty("shim");
    const io = memoryIo();
    expect(await shim(["--help"], io)).toBe(0);
    const usage = io.stdout.join("\n").replace(/\s+/g, " ");
    expect(usage).not.toContain("wherever you type the command");
    expect(usage).toContain("outside api-shim/");
  });

  it("npm run shim with a bad setting lists it and exits 1", () => {
    const r = spawnSync(process.execPath, [fileURLToPath(new URL("../../scripts/start-shim.ts", import.meta.url))], {
      env: { PATH: process.env.PATH, SHIM_PORT: "80a", SHIM_DATABASE_URL: "mysql://x/db" }, encoding: "utf8", timeout: 20_000,
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('SHIM_PORT: "80a" is not valid');
    expect(r.stderr).toContain('SHIM_DATABASE_URL: "mysql://x/db" is not valid');
    // No banner, admin token or curl for a server that never starts.
    expect(r.stdout).not.toMatch(/api-shim \(dev\) on|admin token|curl/);
  });

  it("npm run shim on SHIM_PORT=0 shows the port it got in its banner, not 0", async () => {
    const child = spawn(process.execPath, [fileURLToPath(new URL("../../scripts/start-shim.ts", import.meta.url))], {
      env: { PATH: process.env.PATH, SHIM_PORT: "0", SHIM_DATABASE_URL: "sqlite::memory:" }, stdio: ["ignore", "pipe", "pipe"],
    });
    try {
      let out = "";
      child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
      await expect.poll(() => out.includes("base_url"), { timeout: 15_000 }).toBe(true);
      const port = Number(/base_url http:\/\/127\.0\.0\.1:(\d+)\/v1/.exec(out)?.[1]);
      expect(port).toBeGreaterThan(0);
      expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);
    } finally {
      child.kill("SIGINT");
      await once(child, "exit");
    }
  });

  /**
   * `npm run shim` (pretty logs) with its stdout and stderr on pipes; resolves once it listens,
   * with its port and what it has printed so far (`output()`, both streams).
   */
  const startDevShim = async (env: NodeJS.ProcessEnv = {}) => {
    const child = spawn(process.execPath, [fileURLToPath(new URL("../../scripts/start-shim.ts", import.meta.url))], {
      env: { PATH: process.env.PATH, SHIM_PORT: "0", SHIM_DATABASE_URL: "sqlite::memory:", SHIM_UPSTREAM_URL: "http://127.0.0.1:9/v1", ...env }, stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal, at: Date.now() })));
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (out += d));
    await expect.poll(() => out.includes("base_url"), { timeout: 15_000 }).toBe(true);
    return { child, exited, port: Number(/base_url http:\/\/127\.0\.0\.1:(\d+)\/v1/.exec(out)?.[1]), output: () => out };
  };

  // The readiness probe's hint used to reach the log only when someone asked /ready: a shim
  // started without `npm run fake-vllm`, or with SHIM_UPSTREAM_URL missing /v1, started silently.
  it("npm run shim whose upstream is down warns once at start, and keeps serving", async () => {
    const port = await freePort();
    const { child, exited, output } = await startDevShim({ SHIM_UPSTREAM_URL: `http://127.0.0.1:${port}/v1` });
    try {
      await expect.poll(() => output(), { timeout: 10_000 }).toContain(
        `Warning: the upstream at http://127.0.0.1:${port}/v1 is not answering (unreachable: ECONNREFUSED): is \`npm run fake-vllm\` (or your server) running, on the port SHIM_UPSTREAM_URL names?`,
      );
      expect(output().match(/Warning: the upstream/g)).toHaveLength(1);
      const base = /base_url (http:\/\/\S+)\/v1/.exec(output())![1]!;
      expect((await fetch(`${base}/health`)).status).toBe(200);
      await expectExitAfterCtrlC(child, exited, 5000);
    } finally {
      child.kill("SIGKILL");
    }
  });

  // Found by review: an unreachable upstream was also asked about /v1, which only ever gives a
  // 404 (the next test), and a mistyped host was told to start the fake.
  it("the warning for an unreachable upstream names what is wrong: the host name, or nothing on the port", () => {
    const probe = (cause: string) => ({ ok: false, detail: "unreachable", cause });
    expect(upstreamWarning("http://vlm:8000/v1", probe("ENOTFOUND"))).toBe(
      "Warning: the upstream at http://vlm:8000/v1 is not answering (unreachable: ENOTFOUND): no such host: check the host name in SHIM_UPSTREAM_URL",
    );
    expect(upstreamWarning("http://127.0.0.1:8001/v1", probe("ECONNREFUSED"))).not.toContain("/v1?");
    // A name server that does not answer (EAI_AGAIN) is a host-name problem too, not a port.
    expect(upstreamWarning("http://vlm:8000/v1", probe("EAI_AGAIN"))).toContain("no such host: check the host name in SHIM_UPSTREAM_URL");
  });

  it("npm run shim warns at start of an upstream URL without /v1, and not of one that is ready", async () => {
    const fake = await serveFakeVllm({ FAKE_VLLM_PORT: "0" });
    try {
      const root = fake.url.replace(/\/v1$/, "");
      const wrong = await startDevShim({ SHIM_UPSTREAM_URL: root });
      try {
        await expect.poll(() => wrong.output(), { timeout: 10_000 }).toContain(`Warning: the upstream at ${root}/ is not ready (status 404): the upstream answered 404 for`);
        expect(wrong.output()).toContain("SHIM_UPSTREAM_URL should be its base URL including /v1");
      } finally {
        wrong.child.kill("SIGKILL");
      }
      const right = await startDevShim({ SHIM_UPSTREAM_URL: fake.url });
      try {
        const base = /base_url (http:\/\/\S+)\/v1/.exec(right.output())![1]!;
        await expect.poll(async () => (await fetch(`${base}/ready`)).status, { timeout: 10_000 }).toBe(200);
        await new Promise((r) => setTimeout(r, 500)); // the start's own probe is as quick as /ready's
        expect(right.output()).not.toContain("Warning:");
      } finally {
        right.child.kill("SIGKILL");
      }
    } finally {
      await fake.close();
    }
  });

  /** Sends Ctrl-C and expects exit 0 within `withinMs`. */
  const expectExitAfterCtrlC = async (child: ReturnType<typeof spawn>, exited: Promise<unknown>, withinMs: number) => {
    const sent = Date.now();
    child.kill("SIGINT");
    const exit = await Promise.race([exited, new Promise((r) => setTimeout(r, 8000, "still running 8 s after Ctrl-C"))]);
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect((exit as { at: number }).at - sent).toBeLessThan(withinMs);
  };

  it("npm run shim | tee, then Ctrl-C: the reader is gone with the logs' pipe, the shim still exits (0) within seconds", async () => {
    const { child, exited } = await startDevShim();
    try {
      // Ctrl-C reaches tee too: it dies at once, and the shim's last lines have nowhere to go.
      child.stdout.destroy();
      child.stderr.destroy();
      await expectExitAfterCtrlC(child, exited, 5000);
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("npm run shim | tee: a second Ctrl-C once it stopped exits at once, not after the wait for its logs", async () => {
    const { child, exited, port } = await startDevShim();
    try {
      child.stdout.destroy();
      child.stderr.destroy();
      child.kill("SIGINT");
      // Stopped: it no longer listens (and waits only on its logs).
      await expect.poll(() => fetch(`http://127.0.0.1:${port}/health`).then(() => "listening", () => "stopped"), { timeout: 5000 }).toBe("stopped");
      await expectExitAfterCtrlC(child, exited, 1000);
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("npm run shim on a port already in use says so, without a banner for a server that never listened", async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    try {
      const port = (taken.address() as AddressInfo).port;
      const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
        execFile(process.execPath, [fileURLToPath(new URL("../../scripts/start-shim.ts", import.meta.url))], {
          env: { PATH: process.env.PATH, SHIM_PORT: String(port), SHIM_DATABASE_URL: "sqlite::memory:" }, encoding: "utf8", timeout: 20_000,
        }, (err, stdout, stderr) => resolve({ status: err ? (err as { code?: number }).code ?? null : 0, stdout, stderr }));
      });
      expect(r.status).toBe(1);
      expect(r.stdout + r.stderr).toContain("the address is in use by another process");
      expect(r.stdout).not.toMatch(/api-shim \(dev\) on|admin token|curl/);
    } finally {
      taken.close();
    }
  });

  // A token exported from one run got 401 after a restart: the banner says how to keep it.
  it("the banner says a generated admin token is new at each start, and how to keep one across restarts", () => {
    const generated = devEnvironment({});
    expect(banner(generated.env, generated.generatedToken)).toContain("set SHIM_ADMIN_TOKEN to keep it across restarts");
    const exported = devEnvironment({ SHIM_ADMIN_TOKEN: "operator-chosen-token-123" });
    expect(banner(exported.env, exported.generatedToken)).not.toContain("generated");
  });

  it.each<[string, NodeJS.ProcessEnv]>([["an exported SHIM_ADMIN_TOKEN", { SHIM_ADMIN_TOKEN: "operator-chosen-token-123" }], ["a generated token", {}]])(
    "the banner's curl, pasted into a shell, sends %s",
    (_, extra) => {
      const { env, generatedToken } = devEnvironment({ ...extra });
      const curl = banner(env, generatedToken).split("\n").find((l) => l.trim().startsWith("curl "))!;
      // A shell with `curl` standing in for the real one: print the argument after -H.
      const r = spawnSync("bash", ["-c", `curl() { while [ $# -gt 0 ]; do [ "$1" = -H ] && printf '%s\\n' "$2"; shift; done; }\n${curl}`], {
        env: { PATH: process.env.PATH, ...(extra.SHIM_ADMIN_TOKEN ? { SHIM_ADMIN_TOKEN: extra.SHIM_ADMIN_TOKEN } : {}) }, encoding: "utf8",
      });
      expect(r.stdout.split("\n")).toContain(`authorization: Bearer ${env.SHIM_ADMIN_TOKEN}`);
    },
  );

  it("a variable set but empty (an env file's `SHIM_HOST=`) keeps the dev default: loopback, the banner's port, the default upstream", async () => {
    const { env, generatedToken } = devEnvironment({ SHIM_HOST: "", SHIM_PORT: " ", SHIM_UPSTREAM_URL: "", SHIM_DATABASE_URL: "" });
    const config = parseShimConfig(env, () => "");
    expect(config.host).toBe("127.0.0.1");
    expect(config.port).toBe(8080);
    expect(config.upstreamUrl).toBe("http://127.0.0.1:8000/v1");
    expect(banner(env, generatedToken)).toContain("base_url http://127.0.0.1:8080/v1");
    // A blank admin token is no token: one is generated, and the shim gets it.
    const blankToken = devEnvironment({ SHIM_ADMIN_TOKEN: " " });
    expect(blankToken.generatedToken).toMatch(/^dev-admin-/);
    expect(blankToken.env.SHIM_ADMIN_TOKEN).toBe(blankToken.generatedToken);
    // The fake vLLM too: FAKE_VLLM_HOST= listens on loopback, not on every interface, and a blank
    // model list is the default one (FAKE_VLLM_PORT 0: any free port, for the test).
    const fake = await serveFakeVllm({ FAKE_VLLM_HOST: "", FAKE_VLLM_MODELS: " ", FAKE_VLLM_PORT: "0" });
    // An IPv6 host prints a base URL that parses (bracketed; `::`, every interface, as loopback):
    // it is what SHIM_UPSTREAM_URL is set to.
    for (const [host, printed] of [["::1", "http://[::1]:"], ["::", "http://[::1]:"]] as const) {
      const v6 = await serveFakeVllm({ FAKE_VLLM_HOST: host, FAKE_VLLM_PORT: "0" });
      try {
        expect(v6.url.startsWith(printed), v6.url).toBe(true);
        expect((await fetch(`${v6.url}/models`)).status).toBe(200);
      } finally {
        await v6.close();
      }
    }
    // A value with spaces at its ends (an env file's `FAKE_VLLM_HOST= 127.0.0.1 `) is the value.
    await (await serveFakeVllm({ FAKE_VLLM_HOST: " 127.0.0.1 ", FAKE_VLLM_PORT: " 0 " })).close();
    try {
      expect(new URL(fake.url).hostname).toBe("127.0.0.1");
      const models = (await (await fetch(`${fake.url}/models`)).json()) as { data: { id: string }[] };
      expect(models.data.map((m) => m.id)).toEqual(["qwen2.5-7b"]);
    } finally {
      await fake.close();
    }
  });

  it("the banner shows the database and upstream URLs without their credentials", () => {
    const text = banner({
      SHIM_HOST: "127.0.0.1", SHIM_PORT: "8080",
      SHIM_UPSTREAM_URL: "https://proxy-user:Upstr3amPass@gpu-box:8000/v1?api_key=Upstr3amKey",
      SHIM_DATABASE_URL: "postgres://shim:S3cretPassw0rd@db.internal:5432/shim?sslmode=require",
    }, null);
    expect(text).not.toMatch(/S3cretPassw0rd|Upstr3am/);
    expect(text).toContain("upstream https://***@gpu-box:8000/v1?…");
    expect(text).toContain("database postgres://shim:***@db.internal:5432/shim?sslmode=require");
  });

  it.each([
    ["127.0.0.1", "http://127.0.0.1:8080"], ["0.0.0.0", "http://127.0.0.1:8080"], ["gpu-box", "http://gpu-box:8080"],
    ["::1", "http://[::1]:8080"], ["::", "http://[::1]:8080"], ["fd00::5", "http://[fd00::5]:8080"],
  ])("SHIM_HOST=%s: the banner's URLs are ones curl can use (%s)", (host, base) => {
    const text = banner({ SHIM_HOST: host, SHIM_PORT: "8080", SHIM_UPSTREAM_URL: "http://127.0.0.1:8000/v1", SHIM_DATABASE_URL: "sqlite:./data/shim.db" }, null);
    expect(text).toContain(`api-shim (dev) on ${base} `);
    expect(text).toContain(`curl -s -X POST ${base}/admin/keys `);
    expect(text).toContain(`base_url ${base}/v1`);
    expect(new URL(`${base}/v1`).port).toBe("8080");
  });

  it("the banner hides a database password that holds an unencoded '?'", () => {
    const text = banner({ SHIM_HOST: "127.0.0.1", SHIM_PORT: "8080", SHIM_UPSTREAM_URL: "http://127.0.0.1:8000/v1", SHIM_DATABASE_URL: "postgres://app:s3cr?t@host/db" }, null);
    expect(text).not.toContain("s3cr");
    expect(text).toContain("database postgres://app:***@host/db");
    // "?", "=" and "@" in the password: what follows the "?" is no query.
    const more = banner({ SHIM_HOST: "127.0.0.1", SHIM_PORT: "8080", SHIM_UPSTREAM_URL: "http://127.0.0.1:8000/v1", SHIM_DATABASE_URL: "postgres://app:p/x?k=v@q@db/shim" }, null);
    expect(more).not.toMatch(/p\/x|k=v|v@q/);
    expect(more).toContain("database postgres://app:***@db/shim");
    // A libpq key=value string is no URL: cut before where a password could be.
    const keywords = banner({ SHIM_HOST: "127.0.0.1", SHIM_PORT: "8080", SHIM_UPSTREAM_URL: "http://127.0.0.1:8000/v1", SHIM_DATABASE_URL: "host=db user=app password=s3cret" }, null);
    expect(keywords).not.toContain("s3cret");
    expect(keywords).toContain('database "host…" (32 characters)');
  });

  it("the banner and the start warning never repeat a secret put in SHIM_UPSTREAM_URL or SHIM_DATABASE_URL: the upstream's key, a password alone", () => {
    const upstreamKey = "sk-proj-Ab3dEf9hIjKlMn0pQrStUvWx";
    const text = banner({ SHIM_HOST: "127.0.0.1", SHIM_PORT: "8080", SHIM_UPSTREAM_URL: upstreamKey, SHIM_DATABASE_URL: "Zq9Xw7VtPassw0rd" }, null);
    expect(text).not.toMatch(/Ab3dEf9h|Zq9Xw7Vt/);
    expect(text).toContain("upstream a value shaped like an API key, a token or a password (not repeated)");
    expect(text).toContain('database "Zq9X…" (16 characters)');
    for (const detail of ["unreachable", "HTTP 401"]) {
      expect(upstreamWarning(upstreamKey, { ok: false, detail, cause: "ENOTFOUND" }), detail).not.toContain("Ab3dEf9h");
    }
    expect(upstreamWarning("Zq9Xw7VtPassw0rd", { ok: false, detail: "unreachable" })).not.toContain("Zq9Xw7Vt");
  });

  it("npm run fake-vllm keeps serving after a client that left mid-body and a /_fake/behaviour body that is not JSON (400)", async () => {
    // The real script in a child process: an unhandled rejection would end it.
    const child = spawn(process.execPath, [fileURLToPath(new URL("../../scripts/serve-fake-vllm.ts", import.meta.url))], {
      env: { PATH: process.env.PATH, FAKE_VLLM_PORT: "0" }, stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
    try {
      await expect.poll(() => out.includes("listening on"), { timeout: 15_000 }).toBe(true);
      const url = /listening on (http:\/\/\S+)\/v1/.exec(out)![1]!;
      const s = connect(Number(new URL(url).port), "127.0.0.1");
      await once(s, "connect");
      s.write("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":");
      await new Promise((r) => setTimeout(r, 100));
      s.destroy();
      await new Promise((r) => setTimeout(r, 300));
      const bad = await fetch(`${url}/_fake/behaviour`, { method: "POST", body: "tokenDelayMs=20" }).then((r) => r.status, (e: Error) => `down: ${e.message}`);
      expect(bad, err).toBe(400);
      const health = await fetch(`${url}/health`).then((r) => r.status, (e: Error) => `down: ${e.message}`);
      expect(health, err).toBe(200);
      expect(child.exitCode).toBeNull();
    } finally {
      child.kill("SIGKILL");
    }
  });

  it.each([
    [{ FAKE_VLLM_TOKENS: "ten" }, 'FAKE_VLLM_TOKENS: "ten" is not a whole number of tokens (0 or more)'],
    [{ FAKE_VLLM_TOKENS: "-1" }, 'FAKE_VLLM_TOKENS: "-1" is not a whole number of tokens (0 or more)'],
    [{ FAKE_VLLM_TOKEN_DELAY_MS: "20ms" }, 'FAKE_VLLM_TOKEN_DELAY_MS: "20ms" is not a whole number of milliseconds (0 or more)'],
    [{ FAKE_VLLM_MODELS: " , " }, 'FAKE_VLLM_MODELS: " , " names no model; give comma-separated served names, e.g. qwen2.5-7b'],
    [{ FAKE_VLLM_PORT: "80a" }, 'FAKE_VLLM_PORT: "80a" is not a port (0 to 65535)'],
  ])("fake-vllm refuses %j, naming the variable, and serves nothing", async (env, message) => {
    await expect(serveFakeVllm({ FAKE_VLLM_PORT: "0", ...env })).rejects.toThrow(message);
    // The script itself: one line, exit 2 (bad usage).
    const saved = { ...process.env };
    Object.assign(process.env, env);
    try {
      const io = memoryIo();
      expect(await fakeVllm([], io)).toBe(2);
      expect(io.stderr).toEqual([`fake-vllm: ${message}`]);
    } finally {
      for (const name of Object.keys(env)) {
        if (saved[name] === undefined) delete process.env[name];
        else process.env[name] = saved[name];
      }
    }
  });

  it("fake-vllm takes FAKE_VLLM_TOKENS, FAKE_VLLM_TOKEN_DELAY_MS and FAKE_VLLM_MODELS as given", async () => {
    const fake = await serveFakeVllm({ FAKE_VLLM_PORT: "0", FAKE_VLLM_TOKENS: " 5 ", FAKE_VLLM_TOKEN_DELAY_MS: "0", FAKE_VLLM_MODELS: "a, b" });
    try {
      expect(fake.models.map((m) => m.name)).toEqual(["a", "b"]);
      const res = await fetch(`${fake.url}/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ messages: [{ role: "user", content: "hi" }] }) });
      expect(((await res.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBe(5);
    } finally {
      await fake.close();
    }
  });

  it("fake-vllm on a busy port says which variable moves it", async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    const port = (taken.address() as { port: number }).port;
    const saved = process.env.FAKE_VLLM_PORT;
    process.env.FAKE_VLLM_PORT = String(port);
    try {
      const io = memoryIo();
      expect(await fakeVllm([], io)).toBe(2);
      expect(io.stderr).toEqual([`fake-vllm: port ${port} is in use by another process; set FAKE_VLLM_PORT to a free one`]);
    } finally {
      if (saved === undefined) delete process.env.FAKE_VLLM_PORT;
      else process.env.FAKE_VLLM_PORT = saved;
      taken.close();
    }
  });
});
