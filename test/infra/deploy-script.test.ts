// The bundle's deploy.sh and wait-ready.sh (templates/bundle/bin/) run with a stub docker and
// curl (test/support/host-scripts.ts).
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { fakeBundle } from "../support/host-scripts.ts";

const READY_URL = "http://127.0.0.1:8081/ready";

/** deploy.sh as `pulumi up` runs it (nothing new in .incoming), with `docker` as given. */
function deploy(docker: string, stubs: Record<string, string> = {}) {
  const bundle = fakeBundle({ docker, curl: `echo '{"status":"ready"}'`, sleep: "/bin/sleep 0.01", ...stubs });
  const r = bundle.run("deploy.sh", [bundle.dest, "1800", READY_URL]);
  return { ...r, output: r.stdout + r.stderr, calls: bundle.calls() };
}

describe("deploy.sh's wait for docker compose up", () => {
  it("keeps waiting when one `docker compose logs vllm` fails (a container being recreated) while compose up still runs", () => {
    // compose up runs until the progress report (every 30th poll) has run its `compose logs`, up
    // to 20 s: a fixed 2 s held too few polls on a loaded machine.
    const r = deploy(`case "$*" in
      "compose up"*) for i in $(seq 400); do grep -q "^docker compose logs" "$(dirname "$0")/../calls" && break; /bin/sleep 0.05; done;;
      "compose ps"*) echo "vllm Up 40 seconds (health: starting)";;
      "compose logs"*) echo "Error response from daemon: No such container: 0123abcd" >&2; exit 1;;
    esac`);
    expect(r.calls).toContain("docker compose logs"); // the progress report ran
    expect(r.output).toContain("gpu-sandbox: waiting: vllm Up 40 seconds (health: starting)");
    expect({ status: r.status, ready: r.output.includes("gpu-sandbox: ready: ") }).toEqual({ status: 0, ready: true });
  });

  it("says compose up failed, at once, with its own error, when it fails at once (a port taken)", () => {
    const r = deploy(`case "$*" in
      "compose up"*) echo "Error response from daemon: Bind for 0.0.0.0:80 failed: port is already allocated" >&2; exit 1;;
    esac`, { sleep: "/bin/sleep 1" });
    expect(r.status).toBe(1);
    expect(r.output).toContain("port is already allocated");
    expect(r.output).toMatch(/docker compose up failed after \ds \(exit 1\); its error is above/);
    expect(r.output).not.toContain("within 1800s");
    expect(r.calls).not.toMatch(/^sleep (?!1$)/m); // noticed within a second, not after a 30 s sleep
  });
});

describe("wait-ready.sh", () => {
  /** curl against an endpoint that never answers: it gives up after its --max-time. */
  const hungCurl = `while [ $# -gt 0 ]; do [ "$1" = --max-time ] && /bin/sleep "$2"; shift; done; exit 28`;

  it("gives up after its timeout, not about twice that (tries of up to 5 s plus 5 s pauses)", () => {
    const bundle = fakeBundle({ curl: hungCurl, docker: "" });
    const r = bundle.run("wait-ready.sh", [READY_URL, "6"]);
    expect(r.status).toBe(1);
    expect(r.stdout + r.stderr).toContain(`no ready answer from ${READY_URL} within 6s`);
    expect(r.seconds).toBeGreaterThanOrEqual(5);
    expect(r.seconds).toBeLessThan(9); // about twice the timeout (12 s) before the fix
  });

  it("never gives curl --max-time 0 (no limit at all) when the deadline passes between its check and the try", { timeout: 60_000 }, () => {
    // curl fails and sleep returns at once, so each 1 s run polls through the moment $SECONDS
    // (whole seconds) ticks, between reading the time left for the loop and for the try.
    const tries: string[] = [];
    for (let run = 0; run < 20; run++) {
      const bundle = fakeBundle({ curl: "exit 7", docker: "", sleep: "" });
      expect(bundle.run("wait-ready.sh", [READY_URL, "1"]).status).toBe(1);
      tries.push(...bundle.calls().split("\n").filter((l) => l.startsWith("curl ")));
    }
    expect(tries.length).toBeGreaterThan(0);
    expect(tries.filter((t) => t.includes("--max-time 0"))).toEqual([]);
  });

  it("tries at least once with a timeout under 5 s", () => {
    const bundle = fakeBundle({ curl: `echo '{"status":"ready"}'`, docker: "" });
    const r = bundle.run("wait-ready.sh", [READY_URL, "3"]);
    expect(r.stdout).toContain('gpu-sandbox: ready: {"status":"ready"}');
    expect(r.status).toBe(0);
  });
});

describe("deploy.sh on a host whose volume is not mounted", () => {
  function deployOnHost(mounted: boolean) {
    const bundle = fakeBundle({
      docker: "", curl: `echo '{"status":"ready"}'`, sleep: "",
      mountpoint: mounted ? "exit 0" : "exit 1",
    }, "TENANT='acme'\nDATA_DIR='/mnt/gpu-sandbox'\nVOLUME_DEVICE='/dev/disk/by-id/scsi-0Linode_Volume_gs-acme-data'\n");
    const r = bundle.run("deploy.sh", [bundle.dest, "1800", READY_URL]);
    return { ...r, output: r.stdout + r.stderr, calls: bundle.calls() };
  }

  it("refuses to start the stack on the root disk (vLLM would download the model there, the shim start an empty ledger)", () => {
    const r = deployOnHost(false);
    expect(r.status).toBe(1);
    expect(r.output).toContain("the volume is not mounted at /mnt/gpu-sandbox");
    expect(r.calls).not.toContain("docker compose up");
  });

  it("starts it when the volume is mounted", () => {
    const r = deployOnHost(true);
    expect(r.status, r.output).toBe(0);
    expect(r.calls).toContain("docker compose up -d --build --remove-orphans --wait");
  });
});

describe("deploy.sh installing a new bundle", () => {
  /**
   * A host with bundle A installed by a deploy that succeeded, and docker standing in for the
   * stack's state: its containers' ids in <root>/containers; `compose up` gives them new ids
   * (recreates them), or fails when <root>/up-fails exists, recreating them first when
   * <root>/up-recreates does too, or, when <root>/up-loops exists, recreates them and waits
   * while each is restarted again and again (RestartCount 3); `compose pull` fails when
   * <root>/pull-fails exists; `compose run … nginx-check` (nginx -t) refuses the configuration
   * when <root>/nginx-refuses exists, and cannot run when <root>/check-cannot-run does.
   */
  function hostWithBundleA(stubs: Record<string, string> = {}) {
    const docker = `r=$(dirname "$0")/..
    case "$*" in
      ps\\ *|"compose ps -a -q") cat "$r/containers" 2>/dev/null || true;;
      inspect*) if [ -f "$r/up-loops" ]; then shift 2; for id; do echo "$id 3 vllm"; done; fi;;
      compose*" pull "*) if [ -f "$r/pull-fails" ]; then echo "toomanyrequests: You have reached your pull rate limit" >&2; exit 1; fi;;
      compose*" run "*nginx-check)
        if [ -f "$r/nginx-refuses" ]; then
          echo 'nginx: [emerg] unknown directive "http2_push_preload" in /etc/nginx/nginx.conf:41' >&2
          echo "nginx: configuration file /etc/nginx/nginx.conf test failed" >&2; exit 1
        fi
        if [ -f "$r/check-cannot-run" ]; then echo "Error response from daemon: failed to set up container networking" >&2; exit 1; fi;;
      "compose up"*)
        if [ -f "$r/up-loops" ]; then echo "looping-$RANDOM" > "$r/containers"; exec /bin/sleep 20; fi
        if [ -f "$r/up-fails" ]; then
          [ ! -f "$r/up-recreates" ] || echo "recreated-$RANDOM" > "$r/containers"
          echo "Error response from daemon: pull access denied" >&2; exit 1
        fi
        echo "up-$RANDOM" > "$r/containers";;
      "image prune"*) if [ -f "$r/prune-fails" ]; then echo "Error response from daemon: a prune operation is already running" >&2; exit 1; fi; echo "Total reclaimed space: 1.2GB";;
    esac`;
    const bundle = fakeBundle({
      docker, curl: `echo '{"status":"ready"}'`, sleep: "", mountpoint: `[ ! -f "${"$(dirname \"$0\")/.."}/unmounted" ]`, ...stubs,
    }, "TENANT='acme'\nDATA_DIR='/mnt/gpu-sandbox'\n");
    writeFileSync(join(bundle.dest, ".env"), "COMPOSE_PROJECT_NAME=gpu-sandbox\nSHIM_ADMIN_TOKEN=secret\n");
    const files = (v: string) => ({
      "compose.yaml": `services: {} # ${v}\n`, "shim/config.yaml": `version: ${v}\n`, "nginx/nginx.conf": `# ${v}\n`,
    });
    const deploy = (version: string) => {
      bundle.stage(files(version));
      const r = bundle.runIncoming([bundle.dest, "1800", READY_URL]);
      return { ...r, output: r.stdout + r.stderr };
    };
    const first = deploy("A");
    expect(first.status, first.output).toBe(0);
    const flag = (name: string) => writeFileSync(join(bundle.root, name), "");
    const installed = () => ({ shim: bundle.read("shim/config.yaml"), nginx: bundle.read("nginx/nginx.conf") });
    const incoming = () => bundle.read(".incoming/bundle/shim/config.yaml");
    /** Deploys `version`, which fails saying `message`. */
    const deployFails = (version: string, message: string) => {
      const r = deploy(version);
      expect(r.status, r.output).toBe(1);
      expect(r.output).toContain(message);
      return r;
    };
    /** As a reboot leaves a move aside cut short: .previous holds only `names`, moved from the installed bundle. */
    const movedAside = (names: string[]) => {
      rmSync(join(bundle.dest, ".previous"), { recursive: true });
      mkdirSync(join(bundle.dest, ".previous"));
      for (const name of names) renameSync(join(bundle.dest, name), join(bundle.dest, ".previous", name));
    };
    return { bundle, deploy, deployFails, flag, installed, incoming, movedAside };
  }
  const A = { shim: "version: A\n", nginx: "# A\n" };
  const B = { shim: "version: B\n", nginx: "# B\n" };

  it("installs it, keeps the one before in .previous, leaves .env, and empties .incoming once compose up succeeded", () => {
    const host = hostWithBundleA();
    const r = host.deploy("B");
    expect(r.status, r.output).toBe(0);
    expect(host.installed()).toEqual(B);
    expect(host.bundle.read(".previous/shim/config.yaml")).toBe("version: A\n");
    expect(host.bundle.read(".env")).toContain("SHIM_ADMIN_TOKEN=secret");
    expect(host.incoming()).toBeUndefined();
  });

  it("leaves the installed bundle as it was when compose up fails before recreating any container, and installs it at the next run", () => {
    const host = hostWithBundleA();
    host.flag("up-fails");
    host.deployFails("B", "no container was recreated: the bundle installed before is back");
    expect(host.installed()).toEqual(A);
    expect(host.bundle.read("MANIFEST.sha256")).toContain("shim/config.yaml");
    expect(host.incoming()).toBe("version: B\n"); // the next pulumi up tries it again
    // pulumi up runs the deploy again (the copy is done): it installs B this time.
    rmSync(join(host.bundle.root, "up-fails"));
    const again = host.bundle.runIncoming([host.bundle.dest, "1800", READY_URL]);
    expect(again.status, again.stdout + again.stderr).toBe(0);
    expect(host.installed()).toEqual(B);
    expect(host.bundle.read(".previous/shim/config.yaml")).toBe("version: A\n");
  });

  it("keeps the new bundle installed when compose up failed after recreating containers (they need its files), and says so", () => {
    const host = hostWithBundleA();
    host.flag("up-fails");
    host.flag("up-recreates");
    host.deployFails("B", "containers were recreated from the new bundle, so it stays installed");
    expect(host.installed()).toEqual(B);
    expect(host.bundle.read(".previous/shim/config.yaml")).toBe("version: A\n");
    expect(host.incoming()).toBe("version: B\n");
  });

  it("keeps the new bundle installed when the containers compose up recreated crash-loop, and fails without waiting out compose up", () => {
    const host = hostWithBundleA();
    host.flag("up-loops");
    const r = host.deployFails("B", "vllm keeps crashing (restarted 3 times since this docker compose up began)");
    expect(r.output).toContain("containers were recreated from the new bundle, so it stays installed");
    expect(r.seconds).toBeLessThan(15);
    expect(host.installed()).toEqual(B);
    expect(host.incoming()).toBe("version: B\n");
  });

  it("on a new host (nothing installed before), a failed compose up leaves the bundle installed and diagnoses it", () => {
    const host = hostWithBundleA();
    // As on a host's first deploy: nothing installed yet, no container.
    for (const path of ["bin", "MANIFEST.sha256", "compose.yaml", "shim", "nginx", ".previous"]) rmSync(join(host.bundle.dest, path), { recursive: true, force: true });
    writeFileSync(join(host.bundle.root, "containers"), "");
    host.flag("up-fails");
    const r = host.deploy("B");
    expect(r.status).toBe(1);
    expect(r.output).not.toContain("No such file");
    expect(r.output).toContain("the endpoint is not ready. Where to look, on the host:");
    expect(host.installed()).toEqual(B);
  });

  it("leaves the installed bundle whole when installing the new one fails (a full root disk), and a later run still has it to put back", () => {
    // `install` fails writing nginx.conf while <root>/install-fails exists.
    const host = hostWithBundleA({ install: `for a in "$@"; do :; done
      if [ -f "$(dirname "$0")/../install-fails" ] && [ "\${a##*/}" = nginx.conf ]; then echo "install: error writing '$a': No space left on device" >&2; exit 1; fi
      exec /usr/bin/install "$@"` });
    host.flag("install-fails");
    const r = host.deploy("B");
    expect(r.status, r.output + host.bundle.calls()).toBe(1);
    expect(r.output).toContain("No space left on device");
    expect(r.output).toContain("could not install the new bundle");
    expect(host.installed()).toEqual(A);
    expect(host.bundle.read("MANIFEST.sha256")).toContain("shim/config.yaml");
    // The disk freed, the next pulumi up's compose up fails before recreating anything: A is put back.
    rmSync(join(host.bundle.root, "install-fails"));
    host.flag("up-fails");
    const again = host.bundle.runIncoming([host.bundle.dest, "1800", READY_URL]);
    expect(again.status).toBe(1);
    expect(host.installed()).toEqual(A);
  });

  it("finishes a swap a reboot cut short: the bundle before is put back before anything else", () => {
    const host = hostWithBundleA();
    // As a reboot between moving the installed bundle aside and moving the new one in leaves it.
    host.movedAside(["bin", "compose.yaml", "shim", "nginx", "MANIFEST.sha256"]);
    host.flag("up-fails");
    const r = host.deploy("B");
    expect(r.status).toBe(1);
    expect(host.installed()).toEqual(A);
  });

  it("finishes a move aside a reboot cut short (the manifest, moved last, still in place): what was moved comes back", () => {
    const host = hostWithBundleA();
    host.movedAside(["shim", "nginx"]);
    host.flag("up-fails");
    host.deployFails("B", "no container was recreated: the bundle installed before is back");
    expect(host.installed()).toEqual(A);
  });

  it("finishes putting the bundle before back when a reboot cut that short (the new bundle's manifest still in place)", () => {
    const host = hostWithBundleA();
    expect(host.deploy("B").status).toBe(0); // B installed, A in .previous
    host.bundle.stage({ "compose.yaml": "services: {} # B\n", "shim/config.yaml": "version: B\n", "nginx/nginx.conf": "# B\n" });
    // A failed up's put-back, cut short: B's manifest deleted first, A's shim back, A's nginx not yet.
    for (const name of ["MANIFEST.sha256", "shim"]) rmSync(join(host.bundle.dest, name), { recursive: true });
    renameSync(join(host.bundle.dest, ".previous", "shim"), join(host.bundle.dest, "shim"));
    host.flag("up-fails");
    host.deployFails("B", "no container was recreated: the bundle installed before is back");
    expect(host.installed()).toEqual(A);
  });

  it("a run after a move aside cut short in any order (all but shim and nginx aside, the manifest among them) keeps every part of the bundle before", () => {
    const host = hostWithBundleA();
    host.movedAside(["MANIFEST.sha256", "bin", "compose.yaml"]);
    host.flag("up-fails");
    host.deployFails("B", "no container was recreated: the bundle installed before is back");
    expect(host.installed()).toEqual(A);
  });

  it("a reboot while the bundle from two deploys back was being deleted is not taken for a move aside cut short", () => {
    const host = hostWithBundleA();
    // A2 has litellm/, which B dropped; once B is deployed, A2 is in .previous.
    host.bundle.stage({ "compose.yaml": "services: {} # A2\n", "shim/config.yaml": "version: A2\n", "nginx/nginx.conf": "# A2\n", "litellm/config.yaml": "old: A2\n" });
    expect(host.bundle.runIncoming([host.bundle.dest, "1800", READY_URL]).status).toBe(0);
    expect(host.deploy("B").status).toBe(0);
    // The next deploy's deletion of A2 (renamed .previous.old first), cut short: its manifest gone, litellm/ not yet.
    renameSync(join(host.bundle.dest, ".previous"), join(host.bundle.dest, ".previous.old"));
    rmSync(join(host.bundle.dest, ".previous.old", "MANIFEST.sha256"));
    rmSync(join(host.bundle.dest, ".previous.old", "shim"), { recursive: true });
    // A change of secrets alone (nothing copied): the installed deploy.sh runs.
    const r = host.bundle.run("deploy.sh", [host.bundle.dest, "1800", READY_URL]);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout + r.stderr).not.toContain("put back litellm");
    expect(host.bundle.read("litellm/config.yaml")).toBeUndefined();
    expect(host.bundle.read(".previous.old/litellm/config.yaml")).toBeUndefined(); // its deletion finished
    expect(host.installed()).toEqual(B);
  });

  it("touches neither the installed bundle nor the stack when an image of the new one cannot be pulled", () => {
    const host = hostWithBundleA();
    host.flag("pull-fails");
    const r = host.deployFails("B", "pull rate limit");
    expect(r.output).toContain("the installed bundle and the running stack are unchanged");
    expect(host.installed()).toEqual(A);
    expect(host.bundle.calls().match(/^docker compose up/gm)).toHaveLength(1); // the first deploy's
    expect(host.bundle.calls()).toMatch(/^docker compose --env-file \S+\/opt\/\.env -f \S+\/opt\/\.incoming\/bundle\/compose\.yaml pull --ignore-buildable$/m);
  });

  it("tests the new nginx.conf with the new bundle's nginx before installing anything, and says so", () => {
    const host = hostWithBundleA();
    const r = host.deploy("B");
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain("nginx -t: the new bundle's nginx accepts its nginx.conf");
    const calls = host.bundle.calls().split("\n");
    const check = calls.findIndex((c) => /^docker compose --env-file \S+\/opt\/\.env -f \S+\/opt\/\.incoming\/bundle\/compose\.yaml run --rm -T nginx-check$/.test(c));
    expect(check).toBeGreaterThan(calls.findIndex((c) => c.includes(" pull --ignore-buildable")));
    expect(check).toBeLessThan(calls.lastIndexOf(calls.find((c) => c.startsWith("docker compose up"))!));
  });

  it("leaves the installed bundle and the running stack as they were when the new bundle's nginx refuses its nginx.conf, with nginx's reason", () => {
    const host = hostWithBundleA();
    host.flag("nginx-refuses");
    const r = host.deployFails("B", "the new bundle's nginx refuses its nginx.conf (nginx -t, above); the installed bundle and the running stack are unchanged");
    expect(r.output).toContain('unknown directive "http2_push_preload" in /etc/nginx/nginx.conf:41');
    expect(host.installed()).toEqual(A);
    expect(host.bundle.calls().match(/^docker compose up/gm)).toHaveLength(1); // the first deploy's
    expect(host.incoming()).toBe("version: B\n"); // kept for the next pulumi up, once fixed
  });

  it("deploys all the same when nginx -t could not run at all (Docker's error, not nginx's verdict), showing why", () => {
    const host = hostWithBundleA();
    host.flag("check-cannot-run");
    const r = host.deploy("B");
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain("failed to set up container networking");
    expect(r.output).toContain("could not run nginx -t on the new bundle's nginx.conf (above); deploying it all the same");
    expect(host.installed()).toEqual(B);
  });

  it("leaves the installed bundle as it was when the volume is not mounted", () => {
    const host = hostWithBundleA();
    host.flag("unmounted");
    host.deployFails("B", "the volume is not mounted at /mnt/gpu-sandbox");
    expect(host.installed()).toEqual(A);
    expect(host.incoming()).toBe("version: B\n");
  });

  it("prunes dangling images after a successful compose up, and a failed prune does not fail the deploy", () => {
    const host = hostWithBundleA();
    expect(host.bundle.calls()).toMatch(/^docker compose up .*\n(.*\n)*docker image prune -f$/m);
    host.flag("prune-fails");
    const r = host.deploy("B");
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain("a prune operation is already running");
  });
});

/** vLLM 0.11's log when the engine core fails to start with `error` (a V1 ValueError): the engine
 * core's traceback, then the API server's (about 40 lines) ending in "See root cause above".
 * `version` and `engine` give another version's, whose engine core names itself `EngineCore` (0.29
 * and later). A null `error` is an engine core killed by signal `signal` (the OOM killer's SIGKILL):
 * no traceback of its own, and the API server names its exit code, -signal. */
function vllmEngineFailure(error: string | null,
  { version = "0.11.0", engine = "EngineCore_DP0", signal = 9 }: { version?: string; engine?: string; signal?: number } = {}): string {
  const core = `(${engine} pid=270) ERROR 12-04 21:01:10 [core.py:708]`;
  const api = "(APIServer pid=1)";
  const frames = (prefix: string, list: string[]) => list.flatMap((f) => [`${prefix}   File "${f.split("|")[0]}", line 1, in ${f.split("|")[1]}`, `${prefix}     ${f.split("|")[2]}`]);
  const vllm = "/usr/local/lib/python3.12/dist-packages/vllm";
  return [
    `${api} INFO 12-04 21:00:01 [api_server.py:1839] vLLM API server version ${version}`,
    `${api} INFO 12-04 21:00:09 [model.py:547] Resolved architecture: Qwen2ForCausalLM`,
    `(${engine} pid=270) INFO 12-04 21:00:58 [gpu_model_runner.py:2653] Model loading took 14.25 GiB and 41.2 seconds`,
    `(${engine} pid=270) INFO 12-04 21:01:09 [gpu_worker.py:298] Available KV cache memory: 1.19 GiB`,
    ...(error === null ? [] : [
      `${core} EngineCore failed to start.`,
      `${core} Traceback (most recent call last):`,
      ...frames(core, [`${vllm}/v1/engine/core.py|run_engine_core|engine_core = EngineCoreProc(*args, **kwargs)`,
        `${vllm}/v1/engine/core.py|__init__|super().__init__(vllm_config, executor_class, log_stats,`,
        `${vllm}/v1/engine/core.py|__init__|self._initialize_kv_caches(vllm_config)`,
        `${vllm}/v1/engine/core.py|_initialize_kv_caches|kv_cache_configs = get_kv_cache_configs(vllm_config, kv_cache_specs,`,
        `${vllm}/v1/core/kv_cache_utils.py|get_kv_cache_configs|check_enough_kv_cache_memory(vllm_config, kv_cache_spec_one_worker,`,
        `${vllm}/v1/core/kv_cache_utils.py|check_enough_kv_cache_memory|raise ValueError(`]),
      `${core} ${error}`,
      `(${engine} pid=270) Process ${engine}:`,
      `(${engine} pid=270) Traceback (most recent call last):`,
      ...frames(`(${engine} pid=270)`, ["/usr/lib/python3.12/multiprocessing/process.py|_bootstrap|self.run()",
        "/usr/lib/python3.12/multiprocessing/process.py|run|self._target(*self._args, **self._kwargs)",
        `${vllm}/v1/engine/core.py|run_engine_core|raise e`,
        `${vllm}/v1/core/kv_cache_utils.py|check_enough_kv_cache_memory|raise ValueError(`]),
      `(${engine} pid=270) ${error}`,
      "[rank0]:[W1204 21:01:11.437120815 ProcessGroupNCCL.cpp:1538] Warning: WARNING: destroy_process_group() was not called before program exit, which can leak resources.",
    ]),
    `${api} Traceback (most recent call last):`,
    ...frames(api, ["/usr/local/bin/vllm|<module>|sys.exit(main())",
      `${vllm}/entrypoints/cli/main.py|main|args.dispatch_function(args)`,
      `${vllm}/entrypoints/cli/serve.py|cmd|uvloop.run(run_server(args))`,
      "/usr/local/lib/python3.12/dist-packages/uvloop/__init__.py|run|return __asyncio.run(",
      "/usr/lib/python3.12/asyncio/runners.py|run|return runner.run(main)",
      "/usr/lib/python3.12/asyncio/runners.py|run|return self._loop.run_until_complete(task)",
      "/usr/local/lib/python3.12/dist-packages/uvloop/__init__.py|wrapper|return await main",
      `${vllm}/entrypoints/openai/api_server.py|run_server|await run_server_worker(listen_address, sock, args, **uvicorn_kwargs)`,
      `${vllm}/entrypoints/openai/api_server.py|run_server_worker|async with build_async_engine_client(`,
      `${vllm}/entrypoints/openai/api_server.py|build_async_engine_client|async with build_async_engine_client_from_engine_args(`,
      `${vllm}/entrypoints/openai/api_server.py|build_async_engine_client_from_engine_args|async_llm = AsyncLLM.from_vllm_config(`,
      `${vllm}/v1/engine/async_llm.py|from_vllm_config|return cls(`,
      `${vllm}/v1/engine/async_llm.py|__init__|self.engine_core = EngineCoreClient.make_async_mp_client(`,
      `${vllm}/v1/engine/core_client.py|make_async_mp_client|return AsyncMPClient(*client_args)`,
      `${vllm}/v1/engine/core_client.py|__init__|super().__init__(`,
      `${vllm}/v1/engine/core_client.py|__init__|with launch_core_engines(vllm_config, executor_class,`,
      "/usr/lib/python3.12/contextlib.py|__exit__|next(self.gen)",
      `${vllm}/v1/engine/utils.py|launch_core_engines|wait_for_engine_startup(`,
      `${vllm}/v1/engine/utils.py|wait_for_engine_startup|raise RuntimeError(`]),
    `${api} RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {${error === null ? `'${engine}': -${signal}` : ""}}`,
  ].join("\n") + "\n";
}

// vLLM 0.11's own words (vllm/v1/core/kv_cache_utils.py, vllm/v1/worker/utils.py).
const KV_TOO_SMALL = "ValueError: To serve at least one request with the models's max seq len (32768), (1.75 GiB KV cache is needed, which is larger than the available KV cache memory (1.19 GiB). Based on the available memory, the estimated maximum model length is 22240. Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.";
const NO_KV_MEMORY = "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine.";
const FREE_MEMORY = "ValueError: Free memory on device (18.2/19.7 GiB) on startup is less than desired GPU memory utilization (0.95, 18.7 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.";

/** A bundle whose stub docker prints <root>/<service>.log for `compose logs … <service>`, then runs `docker`. */
function stack(logs: Record<string, string>, docker = "", stubs: Record<string, string> = {}) {
  const bundle = fakeBundle({
    docker: `r=$(dirname "$0")/..
      case "$*" in
        "compose logs"*) for s; do :; done; cat "$r/$s.log" 2>/dev/null || true; exit 0;;
      esac
      ${docker}`,
    curl: "exit 7", sleep: "/bin/sleep 0.05", ...stubs,
  });
  for (const [service, text] of Object.entries(logs)) writeFileSync(join(bundle.root, `${service}.log`), text);
  return bundle;
}

function diagnose(logs: Record<string, string>, docker = "") {
  const r = stack(logs, docker).run("wait-ready.sh", ["--diagnose", READY_URL]);
  return { ...r, output: r.stdout + r.stderr };
}

describe("wait-ready.sh --diagnose with vLLM 0.11's real failures", () => {
  it.each([["max_model_len larger than the KV cache", KV_TOO_SMALL], ["no memory left for the KV cache", NO_KV_MEMORY],
    ["less free GPU memory than gpuMemoryUtilization asks", FREE_MEMORY]])("says the model does not fit when vLLM says %s", (_, error) => {
    const r = diagnose({ vllm: vllmEngineFailure(error) });
    expect(r.status).toBe(1);
    expect(r.output).toContain("The model does not fit in GPU memory");
  });

  it("says so in the words and log prefixes of vLLM 0.29 and later (the default image's: `EngineCore pid=…`, \"model's\")", () => {
    const v031 = { version: "0.31.0", engine: "EngineCore" };
    const kv = diagnose({ vllm: vllmEngineFailure(KV_TOO_SMALL.replace("models's", "model's"), v031) });
    expect(kv.output).toContain("The model does not fit in GPU memory with room for model.maxModelLen tokens");
    expect(kv.output).toContain("Root cause: ValueError: To serve at least one request with the model's max seq len (32768)");
    const free = diagnose({ vllm: vllmEngineFailure(FREE_MEMORY.replace("on device (", "on device cuda:0 ("), v031) });
    expect(free.output).toContain("less of it is free than model.gpuMemoryUtilization asks");
  });

  it("shows vLLM's actual error, not only the API server's 'See root cause above' traceback", () => {
    const r = diagnose({ vllm: vllmEngineFailure(KV_TOO_SMALL) });
    expect(r.output).toContain("RuntimeError: Engine core initialization failed. See root cause above.");
    expect(r.output).toContain("Root cause: ValueError: To serve at least one request with the models's max seq len (32768), (1.75 GiB KV cache is needed, which is larger than the available KV cache memory");
  });

  it("does not tell the operator to set hfToken when the model id does not exist (HF answers 401 Repository Not Found)", () => {
    // vLLM 0.11 logs the Hub's error while listing the repository's files, then refuses the
    // model id; anonymous requests for a missing repository get 401, as gated ones do.
    const log = [
      "(APIServer pid=1) ERROR 12-04 21:00:03 [config.py:139] Error retrieving file list: 401 Client Error. (Request ID: Root=1-6750c8a3-1b2c)",
      "",
      "Repository Not Found for url: https://huggingface.co/api/models/Qwen/Qwen2.5-7B-Instrcut/tree/main?recursive=True&expand=False.",
      "Please make sure you specified the correct `repo_id` and `repo_type`.",
      "If you are trying to access a private or gated repo, make sure you are authenticated. For more details, see https://huggingface.co/docs/huggingface_hub/authentication",
      "Invalid username or password., retrying 1 of 2",
      "(APIServer pid=1) pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig",
      "(APIServer pid=1)   Value error, Invalid repository ID or local directory specified: 'Qwen/Qwen2.5-7B-Instrcut'.",
      "(APIServer pid=1) Please verify the following requirements:",
      "(APIServer pid=1) 1. Provide a valid Hugging Face repository ID.",
    ].join("\n") + "\n";
    const r = diagnose({ vllm: log });
    expect(r.output).not.toContain("hfToken and accept the model's licence");
    expect(r.output).toContain("check model.id");
  });

  it("still says to set hfToken for a gated model (GatedRepoError, 401 as well)", () => {
    const log = [
      "(APIServer pid=1) huggingface_hub.errors.GatedRepoError: 401 Client Error. (Request ID: Root=1-6750c8a3-1b2d)",
      "",
      "Cannot access gated repo for url https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/resolve/main/config.json.",
      "Access to model meta-llama/Llama-3.1-8B-Instruct is restricted. You must have access to it and be authenticated to access it. Please log in.",
    ].join("\n") + "\n";
    const r = diagnose({ vllm: log });
    expect(r.output).toContain("set gpu-sandbox:hfToken and accept the model's licence");
    expect(r.output).not.toContain("check model.id");
  });

  it("shows the logs of the service that failed (the shim refusing to start), not only vLLM's", () => {
    const shim = `{"level":50,"time":1733346071000,"msg":"the volume holding /app/data has 1048576 bytes free, less than the 16777216 (16 MiB) the shim needs to start"}\n`;
    const r = diagnose({ vllm: "(APIServer pid=1) INFO 12-04 21:05:00 [launcher.py:44] Route: /health, Methods: GET\nINFO:     Application startup complete.\n", shim },
      `case "$*" in "compose ps"*) printf '  vllm: Up 6 minutes (healthy)\\n  litellm: Up 6 minutes (healthy)\\n  shim: Restarting (1) 4 seconds ago\\n  nginx: Created\\n';; esac`);
    expect(r.output).toContain("shim: Restarting");
    expect(r.output).toContain("less than the 16777216 (16 MiB) the shim needs to start");
    expect(r.output).toContain("docker compose logs --tail 100 shim");
    expect(r.output).not.toContain("Last lines from vllm"); // healthy
    expect(r.output).not.toContain("Last lines from nginx"); // never started: no log to show
  });

  it("shows the logs of a service still starting (health: starting) beside another that failed", () => {
    // readyTimeoutMinutes ran out while vLLM was still downloading the model (the reason); the
    // shim had just restarted once. The colon inside "(health: starting)" is part of the status.
    const r = diagnose({ vllm: "Downloading model weights\n", shim: "shim exited\n" },
      `case "$*" in "compose ps"*) printf '  vllm: Up 30 minutes (health: starting)\\n  litellm: Up 30 minutes (healthy)\\n  shim: Restarting (1) 3 seconds ago\\n  nginx: Created\\n';; esac`);
    expect(r.output).toContain("Last lines from shim");
    expect(r.output).toContain("Last lines from vllm");
    expect(r.output).not.toContain("Last lines from litellm");
  });

  it("shows vLLM's logs when no service looks failed (or compose ps says nothing)", () => {
    const r = diagnose({ vllm: vllmEngineFailure(NO_KV_MEMORY) });
    expect(r.output).toContain("Last lines from vllm");
    expect(r.output).toContain("Root cause: ValueError: No available memory for the cache blocks.");
  });
});

// PyTorch's words when the host, not the GPU, has no memory left (c10's alloc_cpu.cpp, two
// wordings across versions), the kernel's ENOMEM, and CUDA's.
const CPU_OOM = "RuntimeError: [enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to allocate 3758096384 bytes.";
const CPU_CANT = "RuntimeError: [enforce fail at alloc_cpu.cpp:118] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to allocate 3758096384 bytes. Error code 12 (Cannot allocate memory)";
const ENOMEM = "OSError: [Errno 12] Cannot allocate memory";
const CUDA_OOM = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.02 GiB. GPU 0 has a total capacity of 19.70 GiB of which 512.00 MiB is free.";
const HOST_RAM_HINT = "The host ran out of RAM (not GPU memory)";

/** `compose ps` for a stack whose litellm restarts, and `docker inspect` answering `state` (its
 * OOMKilled, ExitCode and memory limit in bytes) about litellm's container, f00d. */
const litellmInspected = (state: string) => `case "$*" in
  "compose ps -a -q litellm") echo f00d;;
  "compose ps"*) printf '  vllm: Up 6 minutes (healthy)\\n  litellm: Restarting (137) 2 seconds ago\\n  shim: Up 6 minutes (healthy)\\n';;
  inspect*OOMKilled*f00d) echo "${state}";;
  inspect*OOMKilled*) exit 1;;
esac`;
// LiteLLM's ordinary start: what its log holds when the OOM killer ends it (a killed process writes nothing).
const LITELLM_START = "INFO:     Started server process [1]\nINFO:     Waiting for application startup.\n";

describe("wait-ready.sh --diagnose when memory runs out", () => {
  it.each([["PyTorch's CPU allocator", CPU_OOM], ["PyTorch's CPU allocator in an OutOfMemoryError", CPU_OOM.replace("RuntimeError", "torch.OutOfMemoryError")],
    ["PyTorch's CPU allocator's other wording", CPU_CANT],
    ["the kernel's ENOMEM", ENOMEM]])("says the host's RAM, not the GPU's, is short when vLLM reports %s", (_, error) => {
    const r = diagnose({ vllm: vllmEngineFailure(error) });
    expect(r.output).toContain(HOST_RAM_HINT);
    expect(r.output).toContain("a plan with more RAM");
    expect(r.output).toContain("--cpu-offload-gb");
    expect(r.output).not.toContain("does not fit in GPU memory");
  });

  it("still says the model does not fit in GPU memory for CUDA's out of memory", () => {
    const r = diagnose({ vllm: vllmEngineFailure(CUDA_OOM) });
    expect(r.output).toContain("The model does not fit in GPU memory: lower model.maxModelLen");
    expect(r.output).not.toContain(HOST_RAM_HINT);
  });

  it("says a service the OOM killer ended (its log shows nothing wrong) was killed for lack of the host's RAM", () => {
    const r = diagnose({ litellm: LITELLM_START }, litellmInspected("true 137 0"));
    expect(r.output).toContain("litellm was killed for lack of memory (docker inspect: OOMKilled)");
    expect(r.output).toContain(HOST_RAM_HINT);
    expect(r.output).toContain("Last lines from litellm");
    expect(r.output).toContain("Waiting for application startup.");
  });

  it("tells the OOM kill when the service has two containers and the other was not killed (an old one beside a new one)", () => {
    const r = diagnose({ litellm: LITELLM_START }, `case "$*" in
  "compose ps -a -q litellm") printf 'f00d\\nbeef\\n';;
  "compose ps"*) printf '  vllm: Up 6 minutes (healthy)\\n  litellm: Restarting (137) 2 seconds ago\\n';;
  inspect*OOMKilled*) printf 'false 0 0\\ntrue 137 0\\n';;
esac`);
    expect(r.output).toContain("litellm was killed for lack of memory (docker inspect: OOMKilled)");
  });

  it("names the container's memory limit when it has one: that limit, not the host, ran out", () => {
    const r = diagnose({ litellm: LITELLM_START }, litellmInspected("true 137 2147483648"));
    expect(r.output).toContain("litellm was killed for lack of memory (docker inspect: OOMKilled)");
    expect(r.output).toContain("its container's memory limit, 2048 MiB");
    expect(r.output).not.toContain(HOST_RAM_HINT);
  });

  it("says a service ended by SIGKILL without the OOM flag was killed, and says nothing of memory for an ordinary exit", () => {
    const killed = diagnose({ litellm: LITELLM_START }, litellmInspected("false 137 0"));
    expect(killed.output).toContain("litellm was killed (SIGKILL, exit 137)");
    expect(killed.output).not.toContain("lack of memory");
    const exited = diagnose({ litellm: "litellm.exceptions.BadRequestError: no such model\n" }, litellmInspected("false 1 0"));
    expect(exited.output).not.toMatch(/lack of memory|was killed|ran out of RAM/);
    expect(exited.output).toContain("Root cause: litellm.exceptions.BadRequestError: no such model");
  });

  it.each([["vLLM 0.11", {}, "EngineCore_DP0"], ["vLLM 0.29 and later", { version: "0.31.0", engine: "EngineCore" }, "EngineCore"]])(
    "names vLLM's engine core killed by SIGKILL (%s: Failed core proc(s) -9) as the root cause, with the host RAM hint", (_, v, engine) => {
      const r = diagnose({ vllm: vllmEngineFailure(null, v) });
      expect(r.output).toContain(`Root cause: vLLM's engine core (${engine}) was killed by SIGKILL (exit code -9), usually the host's OOM killer`);
      expect(r.output).toContain(HOST_RAM_HINT);
    });

  it("names another signal that killed the engine core, without blaming memory", () => {
    const r = diagnose({ vllm: vllmEngineFailure(null, { signal: 4 }) });
    expect(r.output).toContain("Root cause: vLLM's engine core (EngineCore_DP0) was killed by SIGILL (exit code -4)");
    expect(r.output).not.toContain(HOST_RAM_HINT);
  });
});

describe("deploy.sh when a service crash-loops (restart: unless-stopped)", () => {
  it("fails soon, naming vLLM and its error, instead of waiting out readyTimeoutMinutes while it restarts", { timeout: 40_000 }, () => {
    // compose up --wait does not fail on a container that restarts (its state is `restarting`,
    // its health `starting` for the 4 h start_period): it waits out --wait-timeout, 30 minutes by
    // default. Here it waits 20 s, standing for those 30 minutes, while vLLM keeps failing: the
    // container it created (c0ffee, absent before) has been restarted 6 times.
    const bundle = stack({ vllm: vllmEngineFailure(KV_TOO_SMALL) }, `case "$*" in
      "compose up"*) touch "$r/up"; exec /bin/sleep 20;;
      "compose ps -a -q") if [ -f "$r/up" ]; then echo c0ffee; fi;;
      "compose ps"*) echo "vllm: Restarting (1) 3 seconds ago";;
      inspect*) echo "c0ffee 6 vllm";;
    esac`);
    const r = bundle.run("deploy.sh", [bundle.dest, "1800", READY_URL]);
    const output = r.stdout + r.stderr;
    expect(r.status).toBe(1);
    expect(output).toContain("gpu-sandbox: vllm keeps crashing (restarted 6 times since this docker compose up began)");
    expect(output).toContain("Root cause: ValueError: To serve at least one request");
    expect(output).not.toContain("docker compose up failed after");
    expect(r.seconds).toBeLessThan(15); // not after compose up's own wait (here 20 s, on a host 30 min)
  });

  it("says a crash-looping service was killed for lack of memory when the OOM killer ended it, not only that it keeps crashing", { timeout: 40_000 }, () => {
    const bundle = stack({ litellm: LITELLM_START }, `case "$*" in
      "compose up"*) touch "$r/up"; exec /bin/sleep 20;;
      "compose ps -a -q") if [ -f "$r/up" ]; then echo f00d; fi;;
      "compose ps -a -q litellm") echo f00d;;
      "compose ps"*) echo "  litellm: Restarting (137) 3 seconds ago";;
      inspect*OOMKilled*) echo "true 137 0";;
      inspect*) echo "f00d 3 litellm restarting";;
    esac`);
    const r = bundle.run("deploy.sh", [bundle.dest, "1800", READY_URL]);
    const output = r.stdout + r.stderr;
    expect(r.status).toBe(1);
    expect(output).toContain("gpu-sandbox: litellm keeps crashing (restarted 3 times since this docker compose up began)");
    expect(output).toContain("litellm was killed for lack of memory (docker inspect: OOMKilled)");
    expect(output).toContain(HOST_RAM_HINT);
  });

  it("fails soon when a stopped container that compose up starts again crash-loops (docker start resets its RestartCount)", { timeout: 40_000 }, () => {
    // The shim crash-looped (400 restarts over a weekend) until the operator stopped it; compose
    // up starts the same container (its definition unchanged), Docker resets its RestartCount to
    // 0, and it fails again: 1, 2, 3, … restarts, one more at each inspect.
    const bundle = stack({ shim: "the volume holding /app/data has 1048576 bytes free\n" }, `case "$*" in
      "compose up"*) touch "$r/up"; exec /bin/sleep 20;;
      "compose ps -a -q") echo c0ffee;;
      "compose ps"*) echo "  shim: Restarting (1) 2 seconds ago";;
      inspect*) if [ -f "$r/up" ]; then n=$(( $(cat "$r/n" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$r/n"; echo "c0ffee $n shim restarting"; else echo "c0ffee 400 shim exited"; fi;;
    esac`);
    const r = bundle.run("deploy.sh", [bundle.dest, "1800", READY_URL]);
    const output = r.stdout + r.stderr;
    expect(r.status).toBe(1);
    expect(output).toContain("gpu-sandbox: shim keeps crashing (restarted 2 times since this docker compose up began)");
    expect(r.seconds).toBeLessThan(15); // not after compose up's own wait (here 20 s, on a host 30 min)
  });

  it("keeps waiting on a slow start, a container restarted before this up, and one restarted once", () => {
    // vllm's container was there, running, before (restarted 5 times in its life, none during this
    // up); litellm's was restarting (3 times, once more during this up: Docker does not reset a
    // restarting container's count); the shim's, created by this up, restarted once. compose up
    // succeeds once the check ran 3 times.
    const r = deploy(`r=$(dirname "$0")/..
      case "$*" in
      "compose up"*) touch "$r/up"; for i in $(seq 400); do [ "$(grep -c "^docker inspect" "$r/calls")" -ge 4 ] && break; /bin/sleep 0.05; done;;
      "compose ps -a -q") echo old; echo mid; if [ -f "$r/up" ]; then echo new; fi;;
      inspect*) echo "old 5 vllm running"; if [ -f "$r/up" ]; then echo "mid 4 litellm restarting"; echo "new 1 shim running"; else echo "mid 3 litellm restarting"; fi;;
    esac`);
    expect(r.calls.match(/^docker inspect/gm)?.length).toBeGreaterThanOrEqual(4);
    expect(r.output).not.toContain("keeps crashing");
    expect({ status: r.status, ready: r.output.includes("gpu-sandbox: ready: ") }).toEqual({ status: 0, ready: true });
  });
});

describe("docs/troubleshooting.md", () => {
  it("has rows matching what vLLM 0.11 prints for a model that does not fit, a model id it cannot find, a crash-looping service, and memory the host lacks", () => {
    const docs = readFileSync(join(import.meta.dirname, "../../docs/troubleshooting.md"), "utf8");
    const table = docs.slice(0, docs.indexOf("\n## "));
    expect(table).toContain("KV cache is needed, which is larger than the available KV cache memory");
    expect(table).toContain("Invalid repository ID or local directory specified");
    expect(table).toContain("keeps crashing (restarted");
    expect(table).toContain("No space left on device");
    expect(table).toContain("DefaultCPUAllocator: not enough memory");
    expect(table).toContain("was killed for lack of memory (docker inspect: OOMKilled)");
    expect(table).toContain("Failed core proc(s): {'EngineCore_DP0': -9}");
  });
});
