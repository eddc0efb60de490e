// npm run manage-keys -- <create|list|history|revoke|rotate|top-up|update|write-off> (--stack <name> | --url <base>) [...]
// API keys of one tenant, through its admin API (/admin/keys). The admin token comes from the
// stack's outputs or from an environment variable, never from a flag.
import { randomUUID } from "node:crypto";
import { creditsFlag, idempotencyKeyFlag, noteFlag } from "./lib/credits-flags.ts";
import { noIdempotencyKeyWarning, unattended } from "./lib/unattended.ts";
import { AdminApiError, type AdminClient, adminClient, type AdminTarget, type ApiKey, type CreditGrant, findKey, keyReference } from "./lib/admin-client.ts";
import { createKey, expiryNotApplied, keyNameProblem, nameTaken, noCreditsLine, replayedLines } from "./lib/create-key.ts";
import { mayHaveActed } from "./lib/lost-answers.ts";
import { manageKeysCommand } from "./lib/manage-keys-command.ts";
import { createFromRoster, type RosterRun } from "./lib/roster-keys.ts";
import { rotateKey } from "./lib/rotate-key.ts";
import { writeOff } from "./lib/write-off.ts";
import { isUpTo, notActiveForTopUp, topUpTo } from "./lib/top-up-to.ts";
import { newKeyName, renamedLine, renameUnsupported } from "./lib/rename-key.ts";
import { commaList, EXIT_CODES_USAGE, instantFlag, type Io, npmDashHint, parseFlags, required, runScript, shellWord, UsageError } from "./lib/cli.ts";
import { closestName } from "./lib/closest-name.ts";
import { type ScriptDeps, withDefaults } from "./lib/deps.ts";
import { formatKeys, shownTime } from "./lib/key-list.ts";
import { keyHistory, otherNamesakes } from "./lib/key-history.ts";
import { REJECTED_TOKEN_FLAGS, resolveAdminTarget, TARGET_OPTIONS, TARGET_USAGE } from "./lib/tenant-target.ts";

const USAGE = `Usage: npm run manage-keys -- <command> (--stack <name> | --url <base URL>) [options]

Commands:
  create   --name <name> [--credits <n>] [--tier <tier>] [--models <a,b>] [--expires-at <time>]
           [--idempotency-key <k>]
           makes a key and prints it once (store it then: only its hash is kept);
           --expires-at takes 2027-01-31T23:59:59Z (a zone is required) or 2027-01-31 (00:00 UTC);
           --idempotency-key (e.g. an order number) makes a retry safe: the same create again
           makes no second key and answers the first one's id (its secret only by rotate)
  create   --from <roster.csv> [--credits <n>] [--tier <tier>] [--models <a,b>] [--expires-at <time>]
           [--handout <file>]
           a key per line of a CSV roster: a header line, a name column, and optional credits,
           tier and expires_at columns (a cell left empty takes the flag's value). The whole
           roster is checked first: any problem is listed with its line, and nothing is created.
           A name with a key in use is skipped, so a run again makes only the keys missing.
           Each key goes to the hand-out (name,base_url,key_id,key; mode 0600) as it is made:
           --handout <file>, default ./<stack>-keys-<UTC time>.csv (with --url, the host's
           name), never overwritten; relative paths start at the repository's root, where npm
           runs the script. Progress on stderr; Ctrl-C stops once the key being made is saved.
           A key the hand-out's disk cannot take is printed on stdout (exit 1): save it
  list     every key: balance, held, requests in flight, remaining, tier, when it was created,
           expires and was revoked, status, source
           (config: from the stack's gpu-sandbox:keys, changed there, not with update or rotate)
  history  --key <id|name>             when the key was created, rotated, updated (what changed,
           from what to what) and revoked, and by which admin request (its x-request-id)
  revoke   --key <id|name>             the key stops working at once (401); one already revoked: exit 0, saying when
  rotate   --key <id|name>             a new secret for a leaked key, printed once; the old one gets 401 from the
           next request on; the same id, balance, usage, tier, models and expiry (a stack key: pulumi up --replace)
  update   --key <id|name> [--name <new name>] [--tier <tier>] [--models <a,b> | --all-models]
           [--expires-at <time> | --no-expiry]
           changes a key in use from its next request on: the same secret, balance and usage
           (a key from the stack's gpu-sandbox:keys is changed there, with pulumi up); --name
           alone renames a revoked key too, to erase a person's name (docs/privacy.md)
  top-up   --key <id|name> --amount <n> [--note <text>] [--idempotency-key <k>]
           adds credits; the Idempotency-Key (generated unless given; printable ASCII, no space at
           its ends) is printed first, in the command that retries it safely (never credits twice).
           In a CI job or cron (CI set, or stdin not a terminal) give one (invoice-1042, the day): a
           generated one is new each run, so a re-run credits again (a warning on stderr says so)
  top-up   (--key <id|name> | --all) --up-to <n> [--period <label>] [--note <text>]
           a budget that resets: adds what the key lacks to reach <n> (nothing at or above it), once a
           period: --period, default the UTC month (2026-12); a week: 2026-W49. --all: every key in use
  write-off --key <id|name> --amount <n> --note <text> [--idempotency-key <k>]
           takes credits off (a refund, expired credits), a revoked or expired key's too: never
           more than it has remaining; the note (why) goes on the credits statement, as adjusted;
           the Idempotency-Key as top-up's (a retry can never take twice; in CI: give one)

A create, rotate, top-up or write-off whose answer is lost (the connection dropped, no answer in 30 s, a 5xx)
may have been applied: the error says so and what to run (a top-up's, a write-off's: its retry command);
create --from stops there, its keys made so far in the hand-out.

${TARGET_USAGE}
  --json                     print the API's JSON (create --from: the keys made, as an array)

Examples:
  npm run manage-keys -- create --stack acme --name team-07 --credits 500 --tier developer
  npm run manage-keys -- create --stack acme --from roster.csv --credits 50 --tier developer --expires-at 2027-03-15T18:00:00Z
  npm run manage-keys -- list --stack acme
  npm run manage-keys -- history --stack acme --key team-07
  npm run manage-keys -- top-up --stack acme --key team-07 --amount 250 --note "invoice 1042"
  npm run manage-keys -- top-up --stack acme --all --up-to 50
  npm run manage-keys -- write-off --stack acme --key team-07 --amount 40 --note "refund, credit note CN-7"
  npm run manage-keys -- update --stack acme --key team-07 --tier pro --all-models
  npm run manage-keys -- rotate --stack acme --key team-07
  GPU_SANDBOX_ADMIN_TOKEN=… npm run manage-keys -- revoke --url https://203-0-113-9.ip.linodeusercontent.com --key team-07\n\n${EXIT_CODES_USAGE}`;

const OPTIONS = {
  ...TARGET_OPTIONS,
  json: { type: "boolean" },
  name: { type: "string" },
  credits: { type: "string" },
  tier: { type: "string" },
  models: { type: "string" },
  "expires-at": { type: "string" },
  "all-models": { type: "boolean" },
  "no-expiry": { type: "boolean" },
  key: { type: "string" },
  amount: { type: "string" },
  note: { type: "string" },
  "idempotency-key": { type: "string" },
  from: { type: "string" },
  handout: { type: "string" },
  "up-to": { type: "string" },
  period: { type: "string" },
  all: { type: "boolean" },
} as const;

const COMMANDS = ["create", "list", "history", "revoke", "rotate", "top-up", "update", "write-off"] as const;
/** Flags every command takes: the target's, --json and --help. */
const COMMON_FLAGS = new Set(["help", "json", ...Object.keys(TARGET_OPTIONS)]);
type Command = (typeof COMMANDS)[number];
const isCommand = (word: string | undefined): word is Command => word !== undefined && (COMMANDS as readonly string[]).includes(word);

/**
 * The word a command line gives as its command, before parsing: the first that is no flag nor a
 * known flag's value and is a command (an unknown flag's value, `--credit 5 list`, is no command).
 */
function commandWord(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === "--") return argv[i + 1];
    if (!word.startsWith("-") && isCommand(word)) return word;
    if (word.startsWith("--") && !word.includes("=") && OPTIONS[word.slice(2) as keyof typeof OPTIONS]?.type === "string") i++;
  }
  return undefined;
}

/**
 * For `revoke --key <name>`: when every key the name has named is revoked, the last of them (a
 * rotation run again, after an earlier one left a revoked namesake). findKey would ask for the id.
 */
function lastRevokedByName(keys: readonly ApiKey[], given: string): ApiKey | undefined {
  const ref = keyReference(keys, given);
  if (keys.some((k) => k.id === ref)) return undefined;
  const named = keys.filter((k) => k.name === ref);
  if (named.length < 2 || named.some((k) => k.revoked_at === null)) return undefined;
  return named.reduce((a, b) => (Date.parse(b.revoked_at!) > Date.parse(a.revoked_at!) ? b : a));
}

/** Flags each command accepts besides the target and --json, so a misplaced flag is an error, not ignored. */
const COMMAND_FLAGS: Record<Command, readonly string[]> = {
  create: ["name", "from", "handout", "credits", "tier", "models", "expires-at", "idempotency-key"],
  list: [],
  history: ["key"],
  revoke: ["key"],
  rotate: ["key"],
  "top-up": ["key", "amount", "note", "idempotency-key", "up-to", "period", "all"],
  "write-off": ["key", "amount", "note", "idempotency-key"],
  update: ["key", "name", "tier", "models", "all-models", "expires-at", "no-expiry"],
};

type Flags = { -readonly [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K]["type"] extends "boolean" ? boolean : string };

/**
 * --models as a list, for create and update. One without a name (`--models ,`) is refused here:
 * sent as `[]` it got the API's wording; `every` is how the command gives every model instead.
 */
function modelsFlag(value: string | undefined, every: string): string[] | undefined {
  const models = commaList(value);
  if (models?.length === 0) throw new UsageError(`--models has no model names: give them comma-separated (e.g. qwen2.5-7b,bge-m3), or ${every} for every model`);
  return models;
}

/** An --expires-at the admin API reads (the shim's own check), else why not. */
function expiresAtFlag(value: string | undefined): void {
  instantFlag("expires-at", value, "an ISO timestamp with its zone, e.g. 2026-12-31T23:59:59Z, or a date (00:00 UTC that day)");
}

/** Only one of two flags that say opposite things (--models and --all-models). */
function oneOf(flags: Flags, a: keyof Flags, b: keyof Flags): void {
  if (flags[a] !== undefined && flags[b] !== undefined) throw new UsageError(`--${a} and --${b} contradict each other: give one`);
}

/** `unattended`: why the run looks like a CI job or cron (unattended.ts); undefined at a terminal. */
export async function runCommand(command: Command, flags: Flags, client: AdminClient, io: Io, unattended?: string, now = new Date()): Promise<number> {
  switch (command) {
    case "create": {
      // Trimmed as the shim stores it: "team-07 " is the name "team-07".
      const name = required("name", flags.name?.trim(), "the key's name, e.g. team-07");
      const problem = keyNameProblem(name);
      if (problem) throw new UsageError(`--name ${problem}`);
      expiresAtFlag(flags["expires-at"]);
      const idem = flags["idempotency-key"];
      if (idem !== undefined) idempotencyKeyFlag(idem);
      const models = modelsFlag(flags.models, "leave --models out");
      const body = {
        name,
        ...(flags.credits !== undefined ? { credits: creditsFlag("credits", flags.credits, false) } : {}),
        ...(flags.tier !== undefined ? { tier: flags.tier } : {}),
        ...(models ? { models } : {}),
        ...(flags["expires-at"] !== undefined ? { expiresAt: flags["expires-at"] } : {}),
      };
      const taken = nameTaken(await client.listKeys(), name);
      if (taken?.by === "id") throw new UsageError(`--name "${name}" is the id of another key (${taken.key.name}), and --key "${name}" would always mean that key: choose another --name`, { exit: "refused" });
      // A retry with an Idempotency-Key is sent: the key in use may be the one its first attempt made.
      if (taken && idem === undefined) {
        throw new UsageError(`a key named "${name}" is in use (id ${taken.key.id}), and --key "${name}" must name one key: choose another --name, or revoke that key first (${manageKeysCommand(flags, "revoke", [["key", taken.key.id]])})`, { exit: "refused" });
      }
      const retry = idem && manageKeysCommand(flags, "create", [["name", name], ["credits", body.credits], ["tier", flags.tier], ["models", flags.models], ["expires-at", flags["expires-at"]], ["idempotency-key", idem]]);
      if (idem) io.err(`Idempotency-Key: ${idem}; to retry safely: ${retry}`);
      const created = await createKey(client, body, flags, idem === undefined ? undefined : { key: idem, retry: retry! });
      if (created.key === null) {
        io.out(flags.json ? JSON.stringify(created, null, 2) : replayedLines(created, flags).join("\n"));
        return 0;
      }
      if (flags.json) io.out(JSON.stringify(created, null, 2));
      else {
        io.out(`Created key ${created.name} (id ${created.id}): tier ${created.tier}, ${created.balance} credits${created.models ? `, models ${created.models.join(", ")}` : ""}${created.expires_at ? `, expires ${shownTime(created.expires_at)}` : ""}.`);
        io.out(`Key (shown once; only its hash is stored): ${created.key}`);
      }
      // A key made without --credits has none: every request it sends is a 402 until a top-up
      // (found by a workshop organizer's run, who forgot it for a whole roster's worth of keys).
      if (flags.credits === undefined && created.balance === 0) {
        io.err(noCreditsLine(created.name, false, "no --credits", `${manageKeysCommand(flags, "top-up", [["key", created.name]])} --amount <credits>`));
      }
      // A shim that ignored the expiry made a key that never expires: said, with the key (it exists).
      // A retry that made a key after all (an Idempotency-Key never used, or a shim older than idempotent creations).
      if (taken) io.err(`A key named "${name}" was in use (id ${taken.key.id}) and this create made another; --key "${name}" now names two. Revoke the one not wanted: ${manageKeysCommand(flags, "revoke")} --key <its id>`);
      const expiryLost = expiryNotApplied(created, flags["expires-at"]);
      if (expiryLost) io.err(expiryLost);
      return expiryLost || taken ? 1 : 0;
    }
    case "list": {
      const keys = await client.listKeys();
      io.out(flags.json ? JSON.stringify(keys, null, 2) : formatKeys(keys));
      return 0;
    }
    case "history": {
      // By name, a revoked or expired key too when it alone had the name ("my key stopped working").
      const listed = await client.listKeys();
      const given = required("key", flags.key, "the id or name of the key whose history to show");
      const key = findKey(listed, given);
      return keyHistory(client, key, flags.json === true, io, otherNamesakes(listed, key, given));
    }
    case "revoke": {
      const listed = await client.listKeys();
      const given = required("key", flags.key, "the id or name of the key to revoke");
      const key = lastRevokedByName(listed, given) ?? findKey(listed, given);
      // Done already: exit 0, so that a rotation script run again (after a failure further on) does
      // not stop here; its JSON as a revoke's (the API's answer to a second revoke has `deleted` too).
      if (key.revoked_at !== null) {
        io.out(flags.json ? JSON.stringify({ ...key, deleted: true }, null, 2) : `Key ${key.name} (${key.id}) was already revoked, at ${shownTime(key.revoked_at)}; nothing changed.`);
        return 0;
      }
      const revoked = await client.revokeKey(key.id);
      io.out(flags.json ? JSON.stringify(revoked, null, 2) : `Revoked key ${revoked.name} (${revoked.id}) at ${revoked.revoked_at}; it now gets 401. Its usage and ledger are kept.`);
      return 0;
    }
    case "top-up": {
      if (isUpTo(flags)) return topUpTo(flags, client, io, now);
      const ref = required("key", flags.key, "the id or name of the key to credit");
      const amount = creditsFlag("amount", required("amount", flags.amount, "the credits to add, e.g. 250 (or --up-to <n>: what the key lacks to reach <n>, once a period)"), true);
      const given = flags["idempotency-key"];
      const idem = given ?? `topup-${randomUUID()}`;
      idempotencyKeyFlag(idem);
      if (flags.note !== undefined) noteFlag(flags.note);
      const keys = await client.listKeys();
      const key = findKey(keys, ref);
      // A key not in use cannot be credited (the API's key_inactive): said in one line, before the
      // retry line below, which would offer a retry of a request that cannot succeed. A retry
      // (--idempotency-key given) still goes: the API answers it with the first top-up's grant.
      if (given === undefined) notActiveForTopUp(flags, key);
      // The shim scopes an Idempotency-Key to one API key. A retry that names a key which was
      // rotated since (revoked, a new one made with the same name) would reach the new key and
      // credit it a second time: a retry must name the key it first went to, by id.
      // Compared with the key found, not the text given: findKey reads " team-07" as team-07.
      const namesakes = keys.filter((k) => k.name === key.name && k.id !== key.id);
      if (given !== undefined && key.id !== ref.trim() && namesakes.length > 0) {
        throw new UsageError(`--key "${ref}" names other keys too (${namesakes.map((k) => k.id).join(", ")}), revoked or not; with --idempotency-key give the id of the key the first attempt went to`, { exit: "refused" });
      }
      // The same request again, by the key's id: printed before the request, so an operator whose
      // terminal died with it still has the one retry that can never credit twice.
      const retry = manageKeysCommand(flags, "top-up", [["key", key.id], ["amount", amount], ["note", flags.note], ["idempotency-key", idem]]);
      io.err(`Idempotency-Key: ${idem}; to retry safely: ${retry}`);
      if (given === undefined && unattended !== undefined) io.err(noIdempotencyKeyWarning("top-up", unattended));
      let grant: CreditGrant;
      try {
        grant = await client.topUp(key.id, { amount, ...(flags.note !== undefined ? { note: flags.note } : {}) }, idem);
      } catch (err) {
        if (mayHaveActed(err)) {
          throw new UsageError(`${err.message}\nThe top-up may have been applied. Retry it with the same Idempotency-Key, which adds the credits at most once: ${retry}`, { cause: err });
        }
        if (err instanceof AdminApiError && err.code === "idempotency_key_reused") {
          throw new UsageError(`${err.message}\nThe first top-up with Idempotency-Key ${idem} was applied to ${key.name} (${key.id}); this one (--amount ${amount}${flags.note !== undefined ? `, --note ${shellWord(flags.note)}` : ""}) is a different request, so nothing was added now. Compare the key's balance (${manageKeysCommand(flags, "list")}); to add these credits as another top-up, run it without --idempotency-key.`, { cause: err });
        }
        throw err;
      }
      if (flags.json) {
        io.out(JSON.stringify(grant, null, 2));
        return 0;
      }
      io.out(grant.replayed
        ? `Already applied with this Idempotency-Key; nothing added. Key ${key.name} (${key.id}) had a balance of ${grant.balance} right after it; now ${key.balance}${key.revoked_at === null ? "" : " (revoked)"}.`
        : `Added ${grant.amount} credits to ${key.name} (${key.id}): balance ${grant.balance}, remaining ${grant.credits_remaining}.`);
      return 0;
    }
    case "update":
      return updateKey(flags, client, io);
    case "write-off":
      return writeOff(flags, client, io, unattended);
    case "rotate": {
      const ref = required("key", flags.key, "the id or name of the key to rotate");
      const key = findKey(await client.listKeys(), ref);
      return rotateKey(client, key, manageKeysCommand(flags, "rotate", [["key", key.id]]), flags.json === true, io);
    }
  }
}

/** `create --from`'s run, its flags checked as a single create's: they are the roster's defaults. */
function rosterRun(flags: Flags): RosterRun {
  oneOf(flags, "name", "from");
  if (flags["idempotency-key"] !== undefined) throw new UsageError("--idempotency-key goes with a single create (--name); a roster run again makes only the keys missing");
  const from = required("from", flags.from, "the roster, a CSV file with a name column (--handout goes with --from; a single --name create prints its key)");
  expiresAtFlag(flags["expires-at"]);
  const defaults = {
    credits: flags.credits === undefined ? undefined : creditsFlag("credits", flags.credits, false),
    tier: flags.tier, models: modelsFlag(flags.models, "leave --models out"), expiresAt: flags["expires-at"],
  };
  if (flags.handout === "") throw new UsageError("--handout needs a file name");
  return { from, handout: flags.handout, json: flags.json === true, defaults, target: flags };
}

/**
 * `update`: PATCH /admin/keys/{id} with the fields given (the API takes any of them). An answer
 * lost is told as create's and top-up's are, but running it again is safe: it sets the same values.
 */
async function updateKey(flags: Flags, client: AdminClient, io: Io): Promise<number> {
  const ref = required("key", flags.key, "the id or name of the key to change");
  oneOf(flags, "models", "all-models");
  oneOf(flags, "expires-at", "no-expiry");
  expiresAtFlag(flags["expires-at"]);
  const models = flags["all-models"] ? null : modelsFlag(flags.models, "--all-models");
  const expiry = flags["no-expiry"] ? null : flags["expires-at"];
  const body = {
    ...(flags.tier !== undefined ? { tier: flags.tier } : {}),
    ...(models !== undefined ? { models } : {}),
    ...(expiry !== undefined ? { expires_at: expiry } : {}),
  };
  if (Object.keys(body).length === 0 && flags.name === undefined) throw new UsageError("nothing to change: give at least one of --name, --tier, --models, --all-models, --expires-at, --no-expiry");
  const keys = await client.listKeys();
  const key = findKey(keys, ref);
  const name = flags.name === undefined ? {} : { name: newKeyName(flags.name, keys, key) };
  let updated: ApiKey;
  try {
    updated = await client.updateKey(key.id, { ...name, ...body });
  } catch (err) {
    // A shim from before the route: its 405 (nothing changed) says what to do, not how it refused.
    if (err instanceof AdminApiError && err.status === 405) throw new UsageError("this shim predates `update` (PATCH /admin/keys/{id}): upgrade it (pulumi up)", { cause: err });
    if (mayHaveActed(err)) throw new UsageError(`${err.message}\nThe change may have been made. Running this update again is safe: it sets the same values (${manageKeysCommand(flags, "list")} shows them).`, { cause: err });
    throw renameUnsupported(err) ?? err;
  }
  if (flags.json) io.out(JSON.stringify(updated, null, 2));
  else if (Object.keys(body).length === 0) io.out(renamedLine(key.name, updated));
  else {
    const models = updated.models ? `models ${updated.models.join(", ")}` : "every model";
    const expiry = updated.expires_at ? `expires ${shownTime(updated.expires_at)}` : "no expiry";
    io.out(`Updated key ${updated.name} (${updated.id}): tier ${updated.tier}, ${models}, ${expiry}. Its next request has them; its balance (${updated.balance}) and usage are unchanged.`);
  }
  return 0;
}

export async function main(argv: readonly string[], partial: Partial<ScriptDeps> = {}): Promise<number> {
  const deps = withDefaults(partial);
  return runScript(deps.io, async () => {
    // A mistyped flag is suggested among those its command takes: `list --credit` told to use
    // --credits, which `list` then refused.
    const guess = commandWord(argv);
    const suggest = isCommand(guess) ? [...COMMON_FLAGS, ...COMMAND_FLAGS[guess]] : undefined;
    const { values, positionals } = parseFlags(argv, OPTIONS, USAGE, { positionals: true, rejected: REJECTED_TOKEN_FLAGS, ...(suggest ? { suggest } : {}) });
    if (values.help) {
      deps.io.out(USAGE);
      return 0;
    }
    const command = positionals[0];
    if (positionals.length !== 1 || !isCommand(command)) {
      const hint = positionals.length > 1 ? `\n${npmDashHint(USAGE)}` : "";
      const meant = positionals.length === 1 ? closestName(command!, COMMANDS) : undefined;
      const notOne = command === undefined ? "a command is required; use" : `"${positionals.join(" ")}" is not a command${meant ? `. Did you mean ${meant}? Use` : "; use"}`;
      throw new UsageError(`${notOne} one of: ${COMMANDS.join(", ")}${hint}\n\n${USAGE}`);
    }
    const cmd = command;
    const stray = Object.keys(values).filter((f) => !COMMON_FLAGS.has(f) && !COMMAND_FLAGS[cmd].includes(f));
    if (stray.length) throw new UsageError(`${stray.map((f) => `--${f}`).join(", ")} ${stray.length === 1 ? "does" : "do"} not go with ${cmd}; ${cmd} takes: ${COMMAND_FLAGS[cmd].map((f) => `--${f}`).join(", ") || "no other flags"}`);
    const connect = (target: AdminTarget) => adminClient(target, fetch, { progress: (line) => deps.io.err(line) });
    if (cmd === "create" && (values.from !== undefined || values.handout !== undefined)) return createFromRoster(rosterRun(values), deps, connect);
    return runCommand(cmd, values, connect(await resolveAdminTarget(values, deps)), deps.io, unattended(deps), deps.now());
  });
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
