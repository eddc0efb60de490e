import { createHash } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { ShimContext } from "../context.ts";
import { ShimError } from "../errors.ts";
import { generateKey, isKeyId } from "../auth/keys.ts";
import { creditsInput, creditsNumber, formatCredits, MAX_BALANCE_MICRO } from "../money/money.ts";
import { parsePeriod, readInstant, showPeriod } from "../requests/period.ts";
import { onlyKnown } from "../requests/known-members.ts";
import { grantRefusal, type KeyChanges, type KeyDetails } from "../store/store.ts";
import { isKeyName, isModelName, isNote, isWithin, MAX_IDEMPOTENCY_KEY_LENGTH, MAX_KEY_NAME_CHARACTERS, MAX_NOTE_CHARACTERS, notPlainCharacter } from "../names.ts";
import { usageReportBatches } from "./usage.ts";
import { sendUsageBody } from "./usage-body.ts";
import { modelNamed } from "../requests/model-aliases.ts";

/**
 * Admin routes (Bearer SHIM_ADMIN_TOKEN, checked by the auth hook). nginx also limits /admin/*
 * to the admin CIDRs. Keys are listed without plaintext or hash; the plaintext is in the 201
 * response that creates a key and nowhere else.
 */
export function adminRoutes(app: FastifyInstance, ctx: ShimContext): void {
  app.post("/admin/keys", async (request, reply) => {
    const body = object(request.body, ["name", "credits", "tier", "models", "expires_at", "expiresAt"]);
    const name = body.name;
    if (!isKeyName(name)) throw invalid(keyNameRefusal(name), "name");
    const given = body.credits === undefined ? { micro: 0 } : creditsInput(body.credits, "non-negative");
    if ("must" in given) throw invalid(`'credits' must be ${given.must}.`, "credits");
    const credits = given.micro;
    const tier = tierField(ctx, body.tier === undefined ? ctx.config.defaultTier : body.tier);
    const models = modelList(ctx, body.models);
    const expiresAt = expiryField(ctx, body) ?? null;
    const idem = idempotencyKey(request);
    const { id, key, hash } = generateKey();
    const newKey = { id, name: name.trim(), hash, tier, models, expiresAt, credits, at: ctx.clock.now(), requestId: request.id };
    if (idem === undefined) {
      const record = await ctx.store.createKey(newKey);
      return reply.code(201).send({ ...showKey({ ...record, holds: 0, fromConfiguration: false }), key }); // new: nothing in flight
    }
    // The request as understood, so 50 and "50.0", or expires_at and expiresAt, are the same one;
    // `tier` as given (null: the default), so a retry still matches after the default changes.
    const fingerprint = createHash("sha256").update(JSON.stringify(["keys", newKey.name, credits, body.tier ?? null, models, expiresAt])).digest("hex");
    const result = await ctx.store.createKeyOnce(newKey, { key: idem, fingerprint });
    if (result.kind === "conflict") throw new ShimError("idempotency_key_reused", { param: "Idempotency-Key", message: CREATION_KEY_REUSED });
    if (result.kind === "done") return reply.code(201).send({ ...showKey({ ...result.key, holds: 0, fromConfiguration: false }), key });
    // A retry: the key the first attempt made, as it is now. Its secret was only in the lost answer
    // (the store keeps its hash): `key` is null, and rotating the key gives it a new one.
    const made = await ctx.store.getKeyDetails(result.keyId);
    return reply.code(200).header("idempotent-replayed", "true").send({ ...showKey(made!), key: null });
  });

  app.get("/admin/keys", async (_request, reply) => {
    const keys = await ctx.store.listKeys();
    return reply.send({ object: "list", data: keys.map(showKey) });
  });

  app.delete<{ Params: { id: string } }>("/admin/keys/:id", async (request, reply) => {
    if (!isKeyId(request.params.id)) throw keyNotFound();
    const ok = await ctx.store.revokeKey(request.params.id, ctx.clock.now(), request.id);
    if (!ok) throw keyNotFound();
    const key = await ctx.store.getKeyDetails(request.params.id);
    return reply.send({ ...showKey(key!), deleted: true });
  });

  // Beyond DESIGN.md's routes (docs/decisions.md): without it a key could move to another tier,
  // allow-list or expiry only by revoke + create, which took its client down and stranded its balance.
  app.patch<{ Params: { id: string } }>("/admin/keys/:id", async (request, reply) => {
    if (!isKeyId(request.params.id)) throw keyNotFound();
    const body = object(request.body, ["name", "tier", "models", "expires_at", "expiresAt"]);
    const changes: KeyChanges = {};
    // A pseudonym in place of a person's name (docs/privacy.md): a name, never none (`null`), which
    // `--key <name>`, the listing and the reports need; trimmed and checked as create does.
    if (body.name !== undefined) {
      if (!isKeyName(body.name)) throw invalid(keyNameRefusal(body.name), "name");
      changes.name = body.name.trim();
    }
    if (body.tier !== undefined) changes.tier = tierField(ctx, body.tier);
    // `null` is a change here (every model again, no expiry); a field left out is none.
    if (body.models !== undefined) changes.models = modelList(ctx, body.models);
    const expiresAt = expiryField(ctx, body);
    if (expiresAt !== undefined) changes.expiresAt = expiresAt;
    if (Object.keys(changes).length === 0) throw new ShimError("invalid_request", { message: "Give at least one of name, tier, models or expires_at to change." });
    return reply.send(showKey(await changeKey(ctx, request, changes, changes.name === undefined ? undefined : RENAME_CONFIGURED)));
  });

  // Beyond DESIGN.md's routes (docs/decisions.md): a leaked key gets a new secret and keeps its id,
  // name, balance, usage, tier, models and expiry; revoke + create stranded its balance and split
  // its usage. Its id is in the key string, so the new key is `sk-gs-<same id>_<new secret>`.
  app.post<{ Params: { id: string } }>("/admin/keys/:id/rotate", async (request, reply) => {
    if (!isKeyId(request.params.id)) throw keyNotFound();
    if (request.body !== undefined && request.body !== null) object(request.body, []); // nothing to give yet
    const { key, hash } = generateKey(request.params.id);
    const record = await changeKey(ctx, request, { hash }, ROTATE_CONFIGURED);
    return reply.send({ ...showKey(record), key }); // POST /admin/keys's answer: the key, once
  });

  app.post<{ Params: { id: string } }>("/admin/keys/:id/credits", (request, reply) => changeCredits(ctx, request, reply, false));
  // Beyond DESIGN.md's routes (docs/decisions.md): a write-off (a refund, sold credits that
  // expired, a revoked key's leftover), which otherwise stayed a liability on every statement.
  app.post<{ Params: { id: string } }>("/admin/keys/:id/debits", (request, reply) => changeCredits(ctx, request, reply, true));

  app.get("/admin/usage", async (request, reply) => {
    const q = onlyKnown(request.query as object, ["key", "from", "to", "group", "format"], "query parameter");
    const group = q.group ?? "model";
    if (group !== "model" && group !== "day" && group !== "day,model" && group !== "model,price") throw invalid("'group' must be model, day, day,model or model,price.", "group");
    const format = q.format ?? "json";
    if (format !== "json" && format !== "csv") throw invalid("'format' must be json or csv.", "format");
    if (q.key !== undefined && (typeof q.key !== "string" || !isKeyId(q.key))) throw invalid("'key' must be a key id (12 letters or digits).", "key");
    // As the key routes answer: an empty report would read as "this key did nothing". A revoked
    // key is still there, and so is its usage.
    if (q.key !== undefined && !(await ctx.store.getKey(q.key))) throw keyNotFound("key");
    const period = parsePeriod(q, ctx.clock.now());
    const batches = await usageReportBatches(ctx, request, reply, { keyId: (q.key as string | undefined) ?? null, from: period.from, to: period.to, group });
    return sendUsageBody(ctx, request, reply, batches, format, group, { object: "usage_report", period: showPeriod(period), group });
  });
}

/**
 * Why a create's name is refused: a name given but too long is told the limit, one with a
 * character no store keeps as sent is told which, not that a name is required. Counted only up
 * to the limit (isWithin): a body may be 8 MB of name.
 */
function keyNameRefusal(name: unknown): string {
  const rule = `1 to ${MAX_KEY_NAME_CHARACTERS} characters, without control characters`;
  if (typeof name !== "string" || name.trim() === "") return `'name' is required: a string of ${rule}.`;
  if (!isWithin(name, MAX_KEY_NAME_CHARACTERS)) return `'name' has more than ${MAX_KEY_NAME_CHARACTERS} characters: a key's name is ${rule}.`;
  const stray = notPlainCharacter(name);
  if (stray?.kind === "lone surrogate") return `'name' is not plain text: it has half of a UTF-16 surrogate pair (${stray.code}) without the other.`;
  return `'name' has a control character (${stray?.code}): a key's name is ${rule}.`;
}

/**
 * `requests_in_flight`: the key's open holds, whose usage is not in the ledger yet (what a final
 * export waits for: scripts/lib/retire-keys.ts). `held` does not tell them: a free request holds 0.
 * `from_configuration`: a stack key, which PATCH and rotate refuse (409 key_from_configuration).
 */
function showKey(k: KeyDetails) {
  return {
    id: k.id, object: "api_key", name: k.name, tier: k.tier, models: k.models,
    balance: creditsNumber(k.balance), held: creditsNumber(k.held), credits_remaining: creditsNumber(k.balance - k.held),
    requests_in_flight: k.holds,
    from_configuration: k.fromConfiguration,
    created_at: new Date(k.createdAt).toISOString(),
    expires_at: k.expiresAt === null ? null : new Date(k.expiresAt).toISOString(),
    revoked_at: k.revokedAt === null ? null : new Date(k.revokedAt).toISOString(),
  };
}

/**
 * store.updateKey, its refusals as the API answers them (PATCH and rotate). `configured`: what a
 * key from the configuration is told (its entry is where it changes). The request's id goes in
 * the key's history (its event).
 */
async function changeKey(ctx: ShimContext, request: FastifyRequest<{ Params: { id: string } }>, changes: KeyChanges, configured?: string): Promise<KeyDetails> {
  const result = await ctx.store.updateKey(request.params.id, changes, ctx.clock.now(), request.id);
  if (result.kind === "not_found") throw keyNotFound();
  if (result.kind === "revoked") throw new ShimError("key_inactive", { param: "id", message: "This key is revoked: only its name can be changed (give `name` alone). Create a new key instead." });
  if (result.kind === "configured") throw new ShimError("key_from_configuration", { param: "id", ...(configured ? { message: configured } : {}) });
  if (result.kind === "name_in_use") {
    // As manage-keys create refuses a name in use: --key <name> must name one key in use.
    if (changes.name !== undefined) {
      throw new ShimError("key_name_in_use", { param: "name", message: `Another key in use is named "${result.name.slice(0, 200)}" (id ${result.namesake}), and a name must name one key in use (--key <name>): choose another name, or revoke that key first.` });
    }
    throw new ShimError("key_name_in_use", { param: "expires_at", message: `Another key in use is named "${result.name.slice(0, 200)}" (id ${result.namesake}): bringing this expired key back would give two keys in use that name, and a name must name one. Revoke that key first, or create a new key.` });
  }
  return result.key;
}

/**
 * A top-up (POST /admin/keys/{id}/credits) or a write-off (…/debits): `amount` credits added or
 * taken off, with a `note`; an Idempotency-Key replays the first answer (scoped to the key and
 * the route: top-ups.ts). A write-off is made to a revoked or expired key too, and never takes
 * more than is available now (the balance less what requests in flight hold): a balance that
 * went below its holds would leave a request's charge with nothing to come from.
 */
async function changeCredits(ctx: ShimContext, request: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply, writeOff: boolean) {
  if (!isKeyId(request.params.id)) throw keyNotFound();
  const body = object(request.body, ["amount", "note"]);
  const given = creditsInput(body.amount, "positive");
  if ("must" in given) throw invalid(`'amount' must be ${given.must}.`, "amount");
  const amount = given.micro;
  if (body.note !== undefined && (typeof body.note !== "string" || !isNote(body.note))) throw invalid(`'note' must be a string of at most ${MAX_NOTE_CHARACTERS} characters, without control characters other than tabs and line breaks.`, "note");
  const idem = idempotencyKey(request);
  // The fingerprint is the request as understood (amount in µc, note), so 1 and "1.0" are the same request.
  const fingerprint = createHash("sha256").update(JSON.stringify([amount, body.note ?? null])).digest("hex");
  const now = ctx.clock.now();
  let expired = false; // refused as key_inactive, and not revoked: its expiry can be moved on, and its credits spent
  let available = 0; // a write-off's refusal: what it could have taken
  const result = await ctx.store.topUp({
    keyId: request.params.id,
    amount,
    note: (body.note as string | undefined) ?? null,
    at: now,
    ...(writeOff ? { writeOff } : {}),
    idempotency: idem === undefined ? null : { key: idem, fingerprint },
    // Credits for a key that can no longer spend them; a balance past what a JavaScript number
    // holds exactly (the reply could not be written, and the grant rolled back as a 503). Asked
    // by the store after it looks for a replay: a retry gets its first answer whatever came since.
    refuse: (key) => {
      expired = key.revokedAt === null;
      available = key.balance - key.held;
      if (writeOff) return amount > available ? "more_than_available" : null;
      return grantRefusal(key, amount, now);
    },
    respond: (key) => JSON.stringify({ object: writeOff ? "credit_write_off" : "credit_grant", key_id: key.id, amount: creditsNumber(amount), note: body.note ?? null, balance: creditsNumber(key.balance), credits_remaining: creditsNumber(key.balance - key.held) }),
  });
  if (result.kind === "not_found") throw keyNotFound();
  if (result.kind === "refused") {
    if (result.reason === "more_than_available") throw invalid(`'amount' is more than the key's ${formatCredits(available)} credits available: its balance less what requests in flight hold. A write-off never takes a balance below that.`, "amount");
    if (result.reason === "key_inactive") throw new ShimError("key_inactive", { param: "id", ...(expired ? { message: EXPIRED_TOP_UP } : {}) });
    throw invalid(`'amount' would take the balance past ${formatCredits(MAX_BALANCE_MICRO)} credits.`, "amount");
  }
  if (result.kind === "conflict") throw new ShimError("idempotency_key_reused", { param: "Idempotency-Key" });
  if (result.kind === "replay") reply.header("idempotent-replayed", "true");
  return reply.type("application/json").send(result.body);
}

/** The request's Idempotency-Key header (a top-up's, a write-off's, a creation's), checked; undefined when none. */
function idempotencyKey(request: FastifyRequest): string | undefined {
  const idem = request.headers["idempotency-key"];
  if (idem !== undefined && (typeof idem !== "string" || idem === "" || idem.length > MAX_IDEMPOTENCY_KEY_LENGTH)) throw invalid(`Idempotency-Key must be 1 to ${MAX_IDEMPOTENCY_KEY_LENGTH} characters.`, "Idempotency-Key");
  return idem;
}

/** A tier the configuration defines (POST and PATCH /admin/keys). */
function tierField(ctx: ShimContext, v: unknown): string {
  if (typeof v !== "string" || !ctx.config.tiers.has(v)) throw invalid(`'tier' must be one of: ${[...ctx.config.tiers.keys()].join(", ")}.`, "tier");
  return v;
}

/**
 * The body's `expires_at` (as keys are shown) or `expiresAt` (the name first documented): a future
 * instant in ms, null (never expires), or undefined when neither is given.
 */
function expiryField(ctx: ShimContext, body: Record<string, unknown>): number | null | undefined {
  if (body.expires_at !== undefined && body.expiresAt !== undefined) throw invalid("Give 'expires_at' or 'expiresAt', not both.", "expires_at");
  const expiry = body.expires_at !== undefined ? body.expires_at : body.expiresAt; // not ??: a null is given
  if (expiry === undefined || expiry === null) return expiry as null | undefined;
  const read = readInstant(expiry);
  if ("why" in read && read.why !== null) throw invalid(`'expires_at': ${read.why}.`, "expires_at");
  if (!("ms" in read) || read.ms <= ctx.clock.now()) {
    throw invalid("'expires_at' must be a future ISO timestamp with its zone (2027-01-31T23:59:59Z) or date (00:00 UTC that day).", "expires_at");
  }
  return read.ms;
}

function modelList(ctx: ShimContext, v: unknown): string[] | null {
  if (v === undefined || v === null) return null;
  if (!Array.isArray(v) || v.length === 0 || !v.every(isModelName)) throw invalid("'models' must be a non-empty list of model names.", "models");
  // An alias is kept as its model's name: the key is allowed the model under all its names.
  const models = (v as string[]).map((m) => modelNamed(ctx.config, m));
  const unknown = ctx.config.models ? models.filter((m) => !ctx.config.models!.has(m)) : [];
  if (unknown.length > 0) throw invalid(`'models' names unknown models: ${unknown.join(", ")}.`, "models");
  return [...new Set(models)];
}

/** The body as an object of the `known` fields. */
function object(body: unknown, known: readonly string[]): Record<string, unknown> {
  if (body === null || typeof body !== "object" || Array.isArray(body)) throw new ShimError("invalid_request", { message: "Request body must be a JSON object." });
  return onlyKnown(body, known, "field");
}

/** A stack key's rotation: its hash comes from the stack (docs/operations.md, "Rotate a stack key"). */
const ROTATE_CONFIGURED = "This key is defined in the configuration (the stack's gpu-sandbox:keys, or SHIM_CONFIG's bootstrapKeys for a shim you run yourself): its hash comes from there, and the next start of the shim would put the old secret back. Rotate it in the stack: `pulumi up --replace` the resource of its secret, <tenant>-key-<name>-secret, which keeps its id and balance (docs/operations.md, \"Rotate a stack key\"); for a shim you run yourself, put the hash of a new key with the same id in its bootstrapKeys entry and restart it.";
/** A stack key's rename: refused, as every start sets its name from the stack again. */
const RENAME_CONFIGURED = "This key is defined in the configuration (the stack's gpu-sandbox:keys, or SHIM_CONFIG's bootstrapKeys for a shim you run yourself): its name is the stack's configuration, which every start of the shim puts back, and names the stack's resources of its id and secret. To erase it, take the key out of the stack (the next `pulumi up` revokes it; or out of bootstrapKeys, and restart), then rename the revoked key here (docs/privacy.md, \"Erase a person's name\").";
const CREATION_KEY_REUSED = "This Idempotency-Key was used by another key creation, with another name, credits, tier, models or expiry: nothing was created. Send the first creation's body again to get its key back, or use a new Idempotency-Key for a new key.";
const EXPIRED_TOP_UP = "This key is expired: move its expiry on first (`manage-keys update --expires-at`, or PATCH /admin/keys/{id} with expires_at), then top it up.";
const invalid = (message: string, param: string) => new ShimError("invalid_request", { message, param });
const keyNotFound = (param = "id") => new ShimError("not_found", { param, message: "No such key." });
