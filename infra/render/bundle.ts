import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { TenantConfig } from "../config.ts";
import { resourceNames, volumeDevicePath } from "../host.ts";
import { renderCloudInit } from "./cloud-init.ts";

export interface BundleFile {
  readonly content: string;
  /** File mode on the host; defaults to 0644. */
  readonly mode?: number;
}

/** Relative path → file. What `npm run render` writes to out/<stack>/. */
export type Bundle = ReadonlyMap<string, BundleFile>;

/**
 * Everything that would go to the tenant's host, rendered from validated config by pure
 * functions. The same functions feed `pulumi up`, so what `render` shows is what deploys.
 */
export function renderBundle(config: TenantConfig): Bundle {
  const files = new Map<string, BundleFile>();
  files.set("cloud-init.yaml", {
    content: renderCloudInit({ tenant: config.tenant, volumeDevice: volumeDevicePath(resourceNames(config.tenant).volume) }),
  });
  return files;
}

/** Replaces `dir` with the bundle's files. */
export function writeBundle(dir: string, bundle: Bundle): void {
  rmSync(dir, { recursive: true, force: true });
  for (const [path, file] of bundle) {
    const target = join(dir, path);
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, file.content, { mode: file.mode ?? 0o644 });
  }
}
