// The bundle's deploy.sh and wait-ready.sh (templates/bundle/bin/) run with a stub docker and
// curl (test/support/host-scripts.ts).
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
