import { createHash } from "node:crypto";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Images, TenantConfig } from "../config.ts";
import { renderCompose } from "./compose.ts";
import { renderEnvExample } from "./env-file.ts";
import { renderLitellmConfig } from "./litellm.ts";
import { renderNginxConf } from "./nginx.ts";
import { renderShimConfig, type BootstrapKeyRecord } from "./shim-config.ts";
import { SHIM_PACKAGE_DIR, shimSourceFiles } from "./shim-source.ts";
import { readTemplate } from "./template.ts";

/** Relative path → content. What goes to /opt/gpu-sandbox on the host. */
export type Bundle = ReadonlyMap<string, string>;

/** Lists every file with its SHA-256; the host checks it before using the bundle. */
export const MANIFEST = "MANIFEST.sha256";

export interface BundleInputs {
  /** Image references, pinned by digest when `pulumi up` resolved them. */
  readonly images: Images;
  /** Bootstrap keys (hashes only); `render` has none, since Pulumi makes them at deploy time. */
  readonly bootstrapKeys: readonly BootstrapKeyRecord[];
}

/**
 * The serving bundle: compose file, nginx and LiteLLM configs, the shim's config and source, the
 * deploy scripts, `.env.example`, and a manifest. Pure: the same function feeds `pulumi up` and
 * `npm run render`, so what render shows is what deploys. Secrets are never in it; they go to
 * `.env` separately.
 */
export function renderBundle(config: TenantConfig, inputs: BundleInputs): Bundle {
  const files = new Map<string, string>([
    [".env.example", renderEnvExample(config)],
    ["nginx/nginx.conf", renderNginxConf(config)],
    ["nginx/reload-on-cert-change.sh", readTemplate("bundle/reload-on-cert-change.sh")],
    ["litellm/config.yaml", renderLitellmConfig(config)],
    ["shim/config.yaml", renderShimConfig(config, inputs.bootstrapKeys)],
    ["bin/deploy.sh", readTemplate("bundle/bin/deploy.sh")],
    ["bin/wait-ready.sh", readTemplate("bundle/bin/wait-ready.sh")],
    ["bin/make-self-signed-cert.sh", readTemplate("bundle/bin/make-self-signed-cert.sh")],
    ["bin/check-certificate.sh", readTemplate("bundle/bin/check-certificate.sh")],
  ]);
  if (config.tls.mode === "letsencrypt") files.set("tls/certbot-renew.sh", readTemplate("bundle/certbot-renew.sh"));
  for (const [path, content] of shimSourceFiles()) files.set(`${SHIM_PACKAGE_DIR}/${path}`, content);
  // Last: it labels each service with the hash of the files above that it mounts.
  files.set("compose.yaml", renderCompose(config, inputs.images, files));
  files.set(MANIFEST, manifest(files));
  return files;
}

/** `sha256sum` format, sorted by path. */
function manifest(files: ReadonlyMap<string, string>): string {
  return [...files.keys()].sort().map((path) => `${sha256(files.get(path)!)}  ${path}\n`).join("");
}

export function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Identifies a bundle's content: the hash of its manifest. */
export function bundleHash(bundle: Bundle): string {
  const m = bundle.get(MANIFEST);
  if (m === undefined) throw new Error("bundle has no manifest");
  return sha256(m);
}

/** Replaces `dir` with the bundle's files (scripts executable). */
export function writeBundle(dir: string, bundle: Bundle): void {
  rmSync(dir, { recursive: true, force: true });
  for (const [path, content] of bundle) {
    const target = join(dir, path);
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, content, { mode: path.endsWith(".sh") ? 0o755 : 0o644 });
  }
}
