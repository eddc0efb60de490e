import * as pulumi from "@pulumi/pulumi";
// Internal to the SDK (exported from its JS, not its types): resolves once every pending
// registration and call has reached the (mock) monitor — what `pulumi up` waits for too.
import * as settings from "@pulumi/pulumi/runtime/settings.js";
import { vi } from "vitest";

/** A resource the program registered under the mock runtime, with the inputs it was given. */
export interface RecordedResource {
  readonly type: string;
  readonly name: string;
  readonly inputs: Record<string, any>;
  /**
   * URNs of the resources it depends on (its `dependsOn` and its inputs' resources): `pulumi
   * destroy` deletes a resource only after everything that depends on it.
   */
  readonly dependencies: readonly string[];
  /** Its URN, as the (mock) engine named it: `pulumi up` replaces a resource whose URN changed (no alias). */
  readonly urn: string;
  /** Its parent's URN ("" at the top). */
  readonly parent: string;
  /** Per input property, the URNs of the resources its value came from. */
  readonly propertyDependencies: Readonly<Record<string, readonly string[]>>;
  /** What the mock answered: its id and output properties. */
  readonly outputs: Readonly<Record<string, any>>;
  /** Its `replaceOnChanges` option: properties whose change replaces it. */
  readonly replaceOnChanges: readonly string[];
  /** Its `ignoreChanges` option: inputs whose change `pulumi up` ignores, keeping the value in state. */
  readonly ignoreChanges: readonly string[];
  /** Its `deleteBeforeReplace` option: a replacement deletes the old one first (Linode labels are unique). */
  readonly deleteBeforeReplace: boolean;
  /** The provider plugin version it was registered with ("" for a component). */
  readonly providerVersion: string;
}

/** A provider function the program called (`linode.getRegions`, …). */
export interface RecordedCall {
  readonly token: string;
  readonly inputs: Record<string, any>;
}

export const MOCK_IP = "192.0.2.10";
/** The SSH key the mocked host presents: record-host-key.sh prints it (the host-key step's stdout). */
export const MOCK_HOST_KEY = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBMockHostKey=";

/** Answers the program's requests to Hugging Face (`pulumi up` checks model.id there). */
export type FakeHub = (url: URL) => Response | Promise<Response>;

/** A request the program made to Hugging Face, and the token it sent ("Bearer …"), if any. */
export interface HubRequest {
  readonly url: string;
  readonly authorization: string | null;
}

/** Hugging Face as the default mocks answer: every model exists, is not gated, and has a long context. */
export const OPEN_MODEL: FakeHub = (url) => url.pathname.startsWith("/api/models/")
  ? Response.json({ id: url.pathname.slice("/api/models/".length), gated: false })
  : Response.json({ max_position_embeddings: 131072 });

/**
 * Pulumi's mock runtime with plausible Linode, TLS and random outputs, recording every
 * resource and call so tests can assert on exactly what `pulumi up` would create.
 */
export function installMocks(stack: string, overrides: {
  calls?: Record<string, (inputs: any) => any>;
  /** Answers a resource's registration instead of the default (e.g. a promise that never settles: a step still running). */
  resource?: (args: pulumi.runtime.MockResourceArgs) => ReturnType<pulumi.runtime.Mocks["newResource"]> | undefined;
  /** Answers requests to Hugging Face instead of OPEN_MODEL. */
  hub?: FakeHub;
} = {}) {
  const resources: RecordedResource[] = [];
  const calls: RecordedCall[] = [];
  const hubRequests: HubRequest[] = [];
  // The tests run without internet: the program's fetch reaches a fake Hugging Face, and
  // nothing else (a request elsewhere fails as an unreachable host does). For the rest of the
  // test file, as the mocks are: a test that fetches from a server of its own after this calls
  // vi.unstubAllGlobals() first.
  vi.stubGlobal("fetch", async (input: string | URL, init?: RequestInit) => {
    const url = new URL(String(input));
    if (url.hostname !== "huggingface.co") throw new TypeError(`fetch failed (no network under the mock runtime: ${url.host})`);
    hubRequests.push({ url: url.href, authorization: new Headers(init?.headers).get("authorization") });
    return (overrides.hub ?? OPEN_MODEL)(url);
  });
  // The mocks' newResource is not told the dependencies, parent or options: the registration
  // request holds them, and its answer the URN.
  const registrations = new Map<string, Pick<RecordedResource, "dependencies" | "parent" | "propertyDependencies" | "replaceOnChanges" | "ignoreChanges" | "deleteBeforeReplace" | "providerVersion">>();
  const recorded = new Map<string, { -readonly [K in keyof RecordedResource]: RecordedResource[K] }>();
  const key = (type: string, name: string) => `${type}::${name}`;
  pulumi.runtime.setMocks({
    newResource(args) {
      const registration = registrations.get(key(args.type, args.name)) ?? { dependencies: [], parent: "", propertyDependencies: {}, replaceOnChanges: [], ignoreChanges: [], deleteBeforeReplace: false, providerVersion: "" };
      const record = { type: args.type, name: args.name, inputs: args.inputs, urn: "", outputs: {}, ...registration };
      resources.push(record);
      recorded.set(key(args.type, args.name), record);
      const answer = respond(args);
      // An override's promise (a step still running) has no outputs to record.
      if (!(answer instanceof Promise)) record.outputs = { id: answer.id, ...answer.state };
      return answer;
    },
    call(args) {
      calls.push({ token: args.token, inputs: args.inputs });
      const override = overrides.calls?.[args.token];
      if (override) return override(args.inputs);
      switch (args.token) {
        case "linode:index/getRegions:getRegions":
          return {
            id: "regions",
            regions: ["us-ord", "us-sea", "us-east", "fr-par", "de-fra-2"].map((id) => ({
              id, label: id, country: "us", status: "ok", siteType: "core", placementGroupLimits: [],
              capabilities: ["Linodes", "GPU Linodes", "Metadata", "Block Storage", "Cloud Firewall"],
            })),
          };
        case "docker:index/getRegistryImage:getRegistryImage":
          return { id: args.inputs.name, name: args.inputs.name, sha256Digest: `sha256:${"d".repeat(64)}` };
        // The firewall covers the mocked instance (id 12345), as on an account with legacy interfaces.
        case "linode:index/getFirewall:getFirewall":
          return { id: args.inputs.id, label: "fw", linodes: [12345], devices: [{ id: 1, entityId: 12345, label: "gs-instance", type: "linode", url: "/v4/linode/instances/12345" }] };
        case "linode:index/getInstanceType:getInstanceType":
          return { id: args.inputs.id, label: args.inputs.id, class: "gpu", vcpus: 4, memory: 16384, disk: 512000, transfer: 0,
            networkOut: 16000, acceleratedDevices: 0, prices: [{ hourly: 0.52, monthly: 350 }], regionPrices: [], addons: [] };
        default:
          return {};
      }
    },
  }, "gpu-sandbox", stack, false);
  /** The default answer to a registration (or the test's override). */
  function respond(args: pulumi.runtime.MockResourceArgs): ReturnType<pulumi.runtime.Mocks["newResource"]> {
    const override = overrides.resource?.(args);
    if (override !== undefined) return override;
    const state: Record<string, any> = { ...args.inputs };
    switch (args.type) {
      case "linode:index/instance:Instance":
        Object.assign(state, { ipAddress: MOCK_IP, ipv4s: [MOCK_IP], ipv6: "2600:3c00::f03c:91ff:fe00:1/128", status: "running" });
        break;
      case "linode:index/firewall:Firewall":
        return { id: "4242", state };
      case "linode:index/volume:Volume":
        state.filesystemPath = `/dev/disk/by-id/scsi-0Linode_Volume_${args.inputs.label}`;
        break;
      // What a local command printed: only the host-key step's output is read (with its newline).
      // Secret, as @pulumi/command marks every output of a command given a secret input
      // (pulumi/pulumi-command#256): the private key is in its environment.
      case "command:local:Command":
        state.stdout = { [SECRET_SIG]: SECRET_SIG_VALUE, value: `${MOCK_HOST_KEY}\n` };
        break;
      case "tls:index/selfSignedCert:SelfSignedCert":
      case "tls:index/locallySignedCert:LocallySignedCert":
        state.certPem = `-----BEGIN CERTIFICATE-----\nmock-cert-${args.name}\n-----END CERTIFICATE-----\n`;
        break;
      case "tls:index/certRequest:CertRequest":
        state.certRequestPem = `-----BEGIN CERTIFICATE REQUEST-----\nmock-csr\n-----END CERTIFICATE REQUEST-----\n`;
        break;
      case "tls:index/privateKey:PrivateKey":
        Object.assign(state, {
          publicKeyOpenssh: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMockKey test\n",
          privateKeyOpenssh: "-----BEGIN OPENSSH PRIVATE KEY-----\nmock-private-key\n-----END OPENSSH PRIVATE KEY-----\n",
          privateKeyPem: "-----BEGIN PRIVATE KEY-----\nmock-private-pem\n-----END PRIVATE KEY-----\n",
        });
        break;
      case "random:index/randomPassword:RandomPassword":
      case "random:index/randomString:RandomString":
        state.result = `mock-${args.name}-${"x".repeat(Math.max(0, (args.inputs.length ?? 16) - args.name.length - 5))}`.slice(0, args.inputs.length ?? 16);
        break;
    }
    return { id: args.type === "linode:index/instance:Instance" ? "12345" : `${args.name}-id`, state };
  }
  const monitor = (settings as unknown as { getMonitor(): { registerResource(req: RegisterRequest, cb: RegisterCallback): unknown } }).getMonitor();
  const register = monitor.registerResource.bind(monitor);
  monitor.registerResource = (req, cb) => {
    const urns = new Set(req.getDependenciesList());
    const propertyDependencies: Record<string, string[]> = {};
    req.getPropertydependenciesMap().forEach((deps, property) => {
      propertyDependencies[property] = deps.getUrnsList();
      deps.getUrnsList().forEach((u) => urns.add(u));
    });
    registrations.set(key(req.getType(), req.getName()), {
      dependencies: [...urns], parent: req.getParent(), propertyDependencies,
      replaceOnChanges: req.getReplaceonchangesList(), ignoreChanges: req.getIgnorechangesList(),
      deleteBeforeReplace: req.getDeletebeforereplace(), providerVersion: req.getVersion(),
    });
    return register(req, (err, resp) => {
      const record = recorded.get(key(req.getType(), req.getName()));
      if (record && resp) record.urn = resp.getUrn();
      cb(err, resp);
    });
  };
  return { resources, calls, hubRequests };
}

/** The parts of the SDK's (protobuf) registration request read above. */
interface RegisterRequest {
  getType(): string;
  getName(): string;
  getParent(): string;
  getVersion(): string;
  getReplaceonchangesList(): string[];
  getIgnorechangesList(): string[];
  getDeletebeforereplace(): boolean;
  getDependenciesList(): string[];
  getPropertydependenciesMap(): { forEach(fn: (deps: { getUrnsList(): string[] }, property: string) => void): void };
}
type RegisterCallback = (err: unknown, resp?: { getUrn(): string }) => void;

/** The settled value of an output (under mocks every output resolves). */
export function valueOf<T>(output: pulumi.Output<T> | T): Promise<T> {
  if (!pulumi.Output.isInstance(output)) return Promise.resolve(output as T);
  return new Promise((resolve) => (output as pulumi.Output<T>).apply((v) => { resolve(v); return v; }));
}

/** Waits until the mock runtime has seen every resource registration and call of the program. */
export async function settle(): Promise<void> {
  await (settings as unknown as { waitForRPCs(): Promise<void> }).waitForRPCs();
}

/** Pulumi's marker for a secret value inside resource inputs. */
const SECRET_SIG = "4dabf18193072939515e22adb298388d";
const SECRET_SIG_VALUE = "1b47061264138c4ac30d75fd1eb44270";

/** True when an input value reached the (mock) engine marked secret. */
export function isSecretInput(value: unknown): boolean {
  return typeof value === "object" && value !== null && (value as Record<string, unknown>)[SECRET_SIG] === SECRET_SIG_VALUE;
}

/** An input value with Pulumi's secret wrappers removed, at any depth. */
export function plain(value: unknown): any {
  if (isSecretInput(value)) return plain((value as { value: unknown }).value);
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  return value;
}
