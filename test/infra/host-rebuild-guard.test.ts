// Changing the host's user data rebuilds every running tenant's host at its next `pulumi up`
// (user data forces a new instance: a new IP, and with the default tls.domain a new endpoint
// name). This pin makes such a change deliberate: update it only together with an entry in
// docs/operations.md#upgrading that says every host is rebuilt, and why it is worth it.
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { encodeUserData, hostCloudInit } from "../../infra/render/cloud-init.ts";

const PINNED_USER_DATA_SHA256 = "8201d9a7f91412f438483ea41abd5213d7bab836811d25f8f8bb62d90c9162b0";

describe("the host's user data", () => {
  it("is unchanged, so upgrading the kit does not rebuild running hosts (templates/host, templates/cloud-init.yaml)", () => {
    const userData = encodeUserData(hostCloudInit("acme"));
    expect(createHash("sha256").update(userData).digest("hex"),
      "the user data changed: every host is rebuilt at its next pulumi up; if that is meant, pin the new hash and add an Upgrading entry").toBe(PINNED_USER_DATA_SHA256);
  });
});
