import { describe, expect, it } from "vitest";
import { ConfigError, parseShimConfig } from "../../api-shim/src/config.ts";

// SHIM_ADMIN_TOKEN_PREVIOUS and its UNTIL (a planned rotation's overlap): refused at start, with
// a message naming the variable and never the token, when they cannot do what they are set for.
const parse = (env: Record<string, string>) => parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", ...env }, () => {
  throw new Error("no file");
});
const problems = (env: Record<string, string>): string[] => {
  try {
    parse(env);
  } catch (e) {
    if (e instanceof ConfigError) return [...e.problems];
    throw e;
  }
  return [];
};

const CURRENT = "current-admin-token-0123456789";
const PREVIOUS = "previous-admin-token-987654321";

describe("SHIM_ADMIN_TOKEN_PREVIOUS and SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL", () => {
  it.each([
    ["neither", {}, null],
    ["a previous token without an end", { SHIM_ADMIN_TOKEN_PREVIOUS: PREVIOUS }, { token: PREVIOUS, until: null }],
    ["with an end in UTC", { SHIM_ADMIN_TOKEN_PREVIOUS: PREVIOUS, SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL: "2026-06-08T12:00:00Z" }, { token: PREVIOUS, until: Date.UTC(2026, 5, 8, 12) }],
    ["with an end at an offset", { SHIM_ADMIN_TOKEN_PREVIOUS: PREVIOUS, SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL: "2026-06-08T14:00:00.000+02:00" }, { token: PREVIOUS, until: Date.UTC(2026, 5, 8, 12) }],
    ["blank, as Compose passes an unset one", { SHIM_ADMIN_TOKEN_PREVIOUS: "", SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL: " " }, null],
  ])("accepted: %s", (_, env, expected) => {
    expect(parse({ SHIM_ADMIN_TOKEN: CURRENT, ...env }).adminTokenPrevious).toEqual(expected);
  });

  it.each([
    ["an end without a previous token", { SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL: "2026-06-08T12:00:00Z" },
      ["SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL: is set without SHIM_ADMIN_TOKEN_PREVIOUS; expected both (the token being rotated out, and until when it is let in) or neither"]],
    ["an end that is no instant", { SHIM_ADMIN_TOKEN_PREVIOUS: PREVIOUS, SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL: "next week" },
      ['SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL: "ne…" (9 characters) is not valid; expected an ISO-8601 instant with its time zone, e.g. 2026-06-08T12:00:00Z']],
    ["an end without its time zone (read in the host's, hours off)", { SHIM_ADMIN_TOKEN_PREVIOUS: PREVIOUS, SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL: "2026-06-08T12:00:00" },
      ['SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL: "2026-06-08T12:00:00" is not valid; expected an ISO-8601 instant with its time zone, e.g. 2026-06-08T12:00:00Z']],
    ["a date that does not exist", { SHIM_ADMIN_TOKEN_PREVIOUS: PREVIOUS, SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL: "2026-13-01T00:00:00Z" },
      ['SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL: 2026-13-01 is not a day: the month is 01 to 12; expected an ISO-8601 instant with its time zone, e.g. 2026-06-08T12:00:00Z']],
    ["the previous token equal to the current", { SHIM_ADMIN_TOKEN_PREVIOUS: CURRENT },
      ["SHIM_ADMIN_TOKEN_PREVIOUS: is the same as SHIM_ADMIN_TOKEN; expected the token being rotated out, which differs from the new one"]],
    ["a short previous token", { SHIM_ADMIN_TOKEN_PREVIOUS: "0123456789abcde" },
      ["SHIM_ADMIN_TOKEN_PREVIOUS: is 15 characters long; expected at least 16 (random: openssl rand -hex 24; the Pulumi program makes 48)"]],
    ["a placeholder", { SHIM_ADMIN_TOKEN_PREVIOUS: "<shim-admin-token-previous>" },
      ["SHIM_ADMIN_TOKEN_PREVIOUS: is still a placeholder, as in .env.example (<…>); set a secret of your own (random: openssl rand -hex 32)"]],
  ])("refused: %s", (_, env, expected) => {
    expect(problems({ SHIM_ADMIN_TOKEN: CURRENT, ...env })).toEqual(expected);
  });

  it("a previous token without a current one is refused (the new token is SHIM_ADMIN_TOKEN)", () => {
    expect(problems({ SHIM_ADMIN_TOKEN_PREVIOUS: PREVIOUS })).toEqual([
      "SHIM_ADMIN_TOKEN_PREVIOUS: is set without SHIM_ADMIN_TOKEN; expected the new token in SHIM_ADMIN_TOKEN, the old one in SHIM_ADMIN_TOKEN_PREVIOUS",
    ]);
  });

  it("the previous token put in another variable is never repeated", () => {
    const p = problems({ SHIM_ADMIN_TOKEN: CURRENT, SHIM_ADMIN_TOKEN_PREVIOUS: PREVIOUS, SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL: PREVIOUS, SHIM_PORT: PREVIOUS });
    expect(p).toEqual([
      "SHIM_PORT: SHIM_ADMIN_TOKEN_PREVIOUS's value (not repeated) is not valid; expected an integer from 0 to 65535",
      "SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL: SHIM_ADMIN_TOKEN_PREVIOUS's value (not repeated) is not valid; expected an ISO-8601 instant with its time zone, e.g. 2026-06-08T12:00:00Z",
    ]);
    expect(p.join("\n")).not.toContain(PREVIOUS);
  });
});
