// What reap-expired says of a tenant whose keys it revoked but did not destroy: the revoked
// keys (its clients get 401 while the host bills on) and how to keep the tenant, or destroy it.
import { isoSeconds } from "../../api-shim/src/requests/period.ts";
import { commandLine, destroyArgs } from "./pulumi.ts";
import type { EarlierExpiry, RevokedCount } from "./usage-export.ts";

const iso = (d: Date) => isoSeconds(d.getTime());

/**
 * How to give a kept tenant's clients keys again (a revoked key cannot be restored). The stack's
 * own keys (`configured`: the names of those revoked) too: their resources still hold the
 * revoked ids, so `apiKeys` hands out dead keys until each id is replaced. Said only when one of
 * them was revoked: a tenant whose keys were all made with manage-keys has nothing to replace.
 */
function newKeys(stack: string, configured: readonly string[]): string {
  const create = `\`npm run manage-keys -- create --stack ${stack} --name <name> --credits <n>\``;
  if (configured.length === 0) return create;
  const one = configured.length === 1;
  const replace = configured.map((name) => `--replace '<URN of ${stack}-key-${name}-id>'`).join(" ");
  return `${create}; its stack key${one ? "" : "s"} ${configured.join(", ")} stay${one ? "s" : ""} revoked though \`pulumi stack output apiKeys\` still shows ${one ? "it" : "them"}: give ${one ? "it" : "each"} a new id, \`pulumi up --stack ${stack} ${replace}\`, docs/operations.md "Keeping a tenant whose keys a reap revoked"`;
}

/** The lines that say a tenant's keys are revoked (or may be), for a tenant not destroyed. */
export function revokedLines(stack: string, { revokedKeys: n, unsureKeys: u, configuredKeys }: RevokedCount): string {
  return (n > 0
    ? `\n[${stack}] its ${n} key${n === 1 ? " is" : "s are"} revoked (clients get 401) while the host bills on; to keep the tenant instead, raise its ttlHours, \`pulumi up --stack ${stack}\` and create new keys (${newKeys(stack, configuredKeys)})`
    : "") + (u > 0
    ? `\n[${stack}] the revoke of ${u}${n > 0 ? " more" : ""} key${u === 1 ? "" : "s"} got no answer or failed: ${u === 1 ? "it" : "they"} may or may not be revoked; see \`npm run manage-keys -- list --stack ${stack}\``
    : "");
}

/** What a run says of a kept stack whose keys a run for an earlier expiry revoked. */
export function earlierExpiryNote(stack: string, e: EarlierExpiry): string {
  const { revokedKeys: n, unsureKeys: u } = e;
  const check = `its revoke${u === 1 ? "" : "s"} got no answer or failed: see \`npm run manage-keys -- list --stack ${stack}\``;
  const keys = n > 0
    ? `revoked its ${n} key${n === 1 ? "" : "s"} (clients get 401)${u > 0 ? `, and may have revoked ${u} more (${check})` : ""}`
    : `may have revoked ${u} of its keys (${check})`;
  const destroy = `\`${commandLine(destroyArgs(stack))}\``;
  const save = `\`npm run --silent report-usage -- --stack ${stack} --all --group day,model --format csv > ${stack}-usage.csv\` and \`npm run --silent manage-keys -- list --stack ${stack} --json > ${stack}-keys.json\``;
  return `[${stack}] not expired now, but a run for its earlier expiry (${iso(new Date(e.expiresAt))}) ${keys} ` +
    `${e.saved ? "and saved its usage, then its destroy failed" : "and could not save its usage"}; its host bills on. ` +
    `To keep the tenant, create new keys (${newKeys(stack, e.configuredKeys)}); to destroy it after all, ` +
    (e.saved ? `${destroy} (its usage is saved: ${e.saved}). ` : `save its usage first (${save}), then ${destroy}. `) +
    `Then delete ${e.record}, which this line is from.`;
}
