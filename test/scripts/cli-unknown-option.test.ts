// A mistyped flag gets one line: the flag, the known one it is close to, and where the options
// are listed; not parseArgs' advice about positionals after `--` (wrong for an npm user) nor the
// whole usage, in which the typo is lost.
import { describe, expect, it } from "vitest";
import { memoryIo, parseFlags } from "../../scripts/lib/cli.ts";
import { main as listTenants } from "../../scripts/list-tenants.ts";
import { main as manageKeys } from "../../scripts/manage-keys.ts";
import { main as reapExpired } from "../../scripts/reap-expired.ts";
import { tempDir } from "../support/tools.ts";

const KEYS = { name: { type: "string" }, credits: { type: "string" }, stack: { type: "string" }, url: { type: "string" } } as const;
const USAGE = "Usage: npm run manage-keys -- <command> (--stack <name> | --url <base URL>) [options]\n\nCommands: …";

function refusal(argv: string[], options: Parameters<typeof parseFlags>[1] = KEYS, positionals = true): string {
  try {
    parseFlags(argv, options, USAGE, { positionals });
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error(`parseFlags accepted ${argv.join(" ")}`);
}

describe("an unknown option", () => {
  it("names the close known option and points to --help, in one line", () => {
    const message = refusal(["create", "--name", "x", "--credit", "5"]);
    expect(message).toBe("Unknown option '--credit'. Did you mean --credits? (npm run manage-keys -- --help lists the options)");
  });

  it.each([
    [["--stak", "acme"], "--stack"], // a letter left out
    [["--nmae", "x"], "--name"], // two letters swapped
    [["--URL", "http://x"], "--url"], // the wrong case
    [["--cred=5"], "--credits"], // a unique prefix, joined to its value
    [["--hepl"], "--help"],
  ])("%j: suggests %s", (argv, flag) => {
    expect(refusal(argv)).toContain(`Did you mean ${flag}?`);
  });

  it.each([["--bogus"], ["--x"], ["--amount"], ["--cr"]])("%s, close to nothing (or to more than one): no suggestion", (flag) => {
    const options = { ...KEYS, create: { type: "boolean" } } as const; // --cr: --credits or --create
    const message = refusal([flag], options);
    expect(message).toBe(`Unknown option '${flag}'. (npm run manage-keys -- --help lists the options)`);
  });

  it("a flag with a quote in it is named whole (parseArgs' message quotes it with the same character)", () => {
    expect(refusal(["--it's"])).toBe("Unknown option '--it's'. (npm run manage-keys -- --help lists the options)");
    expect(refusal(["--it's"], KEYS, false)).toBe("Unknown option '--it's'. (npm run manage-keys -- --help lists the options)");
  });

  it("without positionals too, and for a short flag; -h still works", () => {
    expect(refusal(["--stak", "acme"], KEYS, false)).toBe("Unknown option '--stak'. Did you mean --stack? (npm run manage-keys -- --help lists the options)");
    expect(refusal(["-x"], KEYS, false)).toBe("Unknown option '-x'. (npm run manage-keys -- --help lists the options)");
    expect(parseFlags(["-h"], KEYS, USAGE).values.help).toBe(true);
  });
});

describe("through a script's main", () => {
  it("npm run manage-keys -- create … --credit 5: the short message on stderr, exit 2, no usage", async () => {
    const io = memoryIo();
    expect(await manageKeys(["create", "--url", "http://x", "--name", "x", "--credit", "5"], { io, env: {} })).toBe(2);
    expect(io.stdout).toEqual([]);
    expect(io.stderr).toEqual(["Unknown option '--credit'. Did you mean --credits? (npm run manage-keys -- --help lists the options)"]);
  });

  // A flag the command does not take is not suggested: `list` would refuse the --credits it was told to use.
  it.each([
    [["list", "--url", "http://x", "--credit", "5"], "Unknown option '--credit'. (npm run manage-keys -- --help lists the options)"],
    [["list", "--url", "http://x", "--jsn"], "Unknown option '--jsn'. Did you mean --json? (npm run manage-keys -- --help lists the options)"],
    [["revoke", "--url", "http://x", "--ky", "a"], "Unknown option '--ky'. Did you mean --key? (npm run manage-keys -- --help lists the options)"],
    [["lst", "--url", "http://x", "--credit", "5"], "Unknown option '--credit'. Did you mean --credits? (npm run manage-keys -- --help lists the options)"],
  ])("npm run manage-keys -- %j: suggests only what the command takes", async (argv, message) => {
    const io = memoryIo();
    expect(await manageKeys(argv, { io, env: {} })).toBe(2);
    expect(io.stderr).toEqual([message]);
  });

  it("npm run reap-expired -- --forse: suggests --force, which the script reads before the shared parser", async () => {
    const io = memoryIo();
    expect(await reapExpired(["--yes", "--forse"], { root: tempDir(), io, env: {} })).toBe(2);
    expect(io.stderr).toEqual(["Unknown option '--forse'. Did you mean --force? (npm run reap-expired -- --help lists the options)"]);
  });

  it("npm run list-tenants -- --jsn: suggests --json", async () => {
    const io = memoryIo();
    expect(await listTenants(["--jsn"], { root: tempDir(), io, env: {} })).toBe(2);
    expect(io.stderr).toEqual(["Unknown option '--jsn'. Did you mean --json? (npm run list-tenants -- --help lists the options)"]);
  });
});

// Found by an operator review: `top-up --key team-07 --amount` (the value forgotten) printed the
// whole usage, in which the one flag at fault is lost, where an unknown flag gets one line.
describe("a flag without its value, or a value for a flag that takes none", () => {
  it("npm run manage-keys -- top-up … --amount: one line naming the flag and pointing to --help, no usage", async () => {
    const io = memoryIo();
    expect(await manageKeys(["top-up", "--url", "http://x", "--key", "team-07", "--amount"], { io, env: {} })).toBe(2);
    expect(io.stdout).toEqual([]);
    expect(io.stderr).toEqual(["--amount needs a value. (npm run manage-keys -- --help lists the options)"]);
  });

  it("a short flag's value missing names its long form; --json=1 says --json takes none", () => {
    expect(refusal(["-n"], { ...KEYS, name: { type: "string", short: "n" } })).toBe("--name needs a value. (npm run manage-keys -- --help lists the options)");
    expect(refusal(["--json=1"], { ...KEYS, json: { type: "boolean" } })).toBe("Option '--json' does not take an argument. (npm run manage-keys -- --help lists the options)");
  });

  it("npm run reap-expired -- --yes --concurrency: the same one line", async () => {
    const io = memoryIo();
    expect(await reapExpired(["--yes", "--concurrency"], { root: tempDir(), io, env: {} })).toBe(2);
    expect(io.stderr).toEqual(["--concurrency needs a value. (npm run reap-expired -- --help lists the options)"]);
  });
});
