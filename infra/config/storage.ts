/**
 * The `storage` setting: `storage.encryption`, Linode's encryption at rest for the tenant's Block
 * Storage Volume (the ledger: key names and usage; the weights) and the instance's local disks
 * (Docker's logs). Unset, the program gives Linode neither property, so a stack deployed before the
 * setting existed sees no change; set, only resources created from then on get it (gpu-host.ts).
 */
import type { Problems } from "./checks.ts";
import type { StorageConfig, StorageEncryption } from "./types.ts";

export const STORAGE_ENCRYPTIONS: readonly StorageEncryption[] = ["enabled", "disabled"];

export function checkStorage(p: Problems, value: unknown): StorageConfig | undefined {
  const v = p.settingMap("storage", value, ["encryption"], "encryption");
  const encryption = p.oneOf("storage.encryption", v.encryption, STORAGE_ENCRYPTIONS);
  return encryption === undefined ? undefined : { encryption };
}
