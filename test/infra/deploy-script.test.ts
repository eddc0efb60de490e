// The bundle's deploy.sh and wait-ready.sh (templates/bundle/bin/) run with a stub docker and
// curl (test/support/host-scripts.ts).
import { mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
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
   * <root>/up-recreates does too; `compose pull` fails when <root>/pull-fails exists.
   */
  function hostWithBundleA(stubs: Record<string, string> = {}) {
    const docker = `r=$(dirname "$0")/..
    case "$*" in
      ps\\ *) cat "$r/containers" 2>/dev/null || true;;
      compose*" pull "*) if [ -f "$r/pull-fails" ]; then echo "toomanyrequests: You have reached your pull rate limit" >&2; exit 1; fi;;
      "compose up"*)
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
