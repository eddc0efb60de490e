/**
 * Whether the Cloud Firewall the instance was created with covers it, once it exists. The
 * firewall given at creation applies to a Linode with legacy configuration-profile interfaces; an
 * account whose new Linodes use Linode Interfaces takes firewalls per interface, which the
 * provider version the kit uses cannot ask for (docs/configuration.md, "Linode Interfaces").
 */

/** What the Linode API says about a firewall (`linode.getFirewall`): the fields read. */
export interface ApiFirewall {
  readonly linodes?: readonly number[];
  readonly devices?: readonly { readonly type: string; readonly entityId: number; readonly url: string }[];
}

/** The firewall covers the instance: the Linode itself (a `linode` device), or one of its Linode Interfaces. */
export function firewallCovers(firewall: ApiFirewall, instanceId: number): boolean {
  if (firewall.linodes?.includes(instanceId)) return true;
  return (firewall.devices ?? []).some((d) =>
    (d.type === "linode" && d.entityId === instanceId) || (d.type === "linode_interface" && d.url.includes(`/linode/instances/${instanceId}/`)));
}

/** The warning for an instance its firewall does not cover. */
export function uncoveredMessage(firewallLabel: string, instanceId: number): string {
  return `Linode lists neither instance ${instanceId} nor one of its interfaces among the devices of firewall ${firewallLabel}: ` +
    "the host may be reachable from beyond allowedCidrs and adminCidrs (SSH, and IPv6 clients; nginx still refuses IPv4 ones outside allowedCidrs). " +
    "Is the account's Network Interface Type set to Linode Interfaces? See docs/configuration.md, \"Linode Interfaces\"; check the instance's Firewall tab in Cloud Manager";
}
