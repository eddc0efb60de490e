import type { FastifyInstance } from "fastify";
import type { ShimContext } from "../context.ts";
import { csvLine } from "../csv-cell.ts";
import { ShimError } from "../errors.ts";
import { isKeyId } from "../auth/keys.ts";
import { creditsNumber, formatCredits } from "../money/money.ts";
import { parsePeriod, showPeriod } from "../requests/period.ts";
import { onlyKnown } from "../requests/known-members.ts";
import type { CreditsLine, GrantEntry, TopUpEntry } from "../store/credits-statement.ts";
import { creditsReport } from "./usage.ts";

/**
 * The CSV's columns, as the JSON names its members. `adjusted` (write-offs) came later: last, so
 * a spreadsheet or script that reads the others by position keeps working.
 */
const COLUMNS = ["key_id", "name", "opening", "granted", "spent", "closing", "adjusted"] as const;

/**
 * GET /admin/credits (beyond DESIGN.md's routes, docs/decisions.md): each key's credits over a
 * period, from the ledger: its balance at the start (`opening`), the credits granted in it (at
 * creation, a stack key's bootstrap grant, top-ups), those spent (its usage charges: /admin/usage's
 * `cost`, summed), those written off (`adjusted`: POST /admin/keys/{id}/debits), and its balance
 * at the end (`closing`), with the period's grants (creation, bootstrap), top-ups and write-offs, their notes
 * and Idempotency-Keys (JSON only). An operator selling credits reconciles
 * a month with it; before, that took a raw query on a backup-ledger copy (SQLite only). Queried as
 * /admin/usage is (`key`, `from`, `to`, `format`), and waits in the same line of reports.
 */
export function creditsRoutes(app: FastifyInstance, ctx: ShimContext): void {
  app.get("/admin/credits", async (request, reply) => {
    const q = onlyKnown(request.query as object, ["key", "from", "to", "format"], "query parameter");
    const format = q.format ?? "json";
    if (format !== "json" && format !== "csv") throw invalid("'format' must be json or csv.", "format");
    if (q.key !== undefined && (typeof q.key !== "string" || !isKeyId(q.key))) throw invalid("'key' must be a key id (12 letters or digits).", "key");
    // As /admin/usage: an empty statement would read as "this key had no credits".
    if (q.key !== undefined && !(await ctx.store.getKey(q.key))) throw new ShimError("not_found", { param: "key", message: "No such key." });
    const period = parsePeriod(q, ctx.clock.now());
    const lines = await creditsReport(ctx, request, reply, { keyId: (q.key as string | undefined) ?? null, from: period.from, to: period.to });
    if (format === "csv") {
      const rows = lines.map((l) => csvLine([l.keyId, l.name, formatCredits(l.opening), formatCredits(l.granted), formatCredits(l.spent), formatCredits(l.closing), formatCredits(l.adjusted)]));
      return reply.type("text/csv; charset=utf-8").header("content-disposition", 'attachment; filename="credits.csv"').send(csvLine(COLUMNS) + rows.join(""));
    }
    return reply.send({ object: "credits_statement", period: showPeriod(period), data: lines.map(shown) });
  });
}

/**
 * A line as the JSON shows it: credits, not µc; its grants, top-ups and write-offs (the CSV, a
 * line per key, has no room for them) with their notes. `grants` is a member of its own, not
 * part of `top_ups`: a reader summing `top_ups` sums what it did before grants were listed.
 */
function shown(l: CreditsLine) {
  return {
    key_id: l.keyId, name: l.name, opening: creditsNumber(l.opening), granted: creditsNumber(l.granted), spent: creditsNumber(l.spent),
    adjusted: creditsNumber(l.adjusted), closing: creditsNumber(l.closing),
    grants: l.grants.map(grant), top_ups: l.topUps.map(entry), write_offs: l.writeOffs.map(entry),
  };
}

const entry = (t: TopUpEntry) => ({ at: new Date(t.at).toISOString(), amount: creditsNumber(t.amount), note: t.note, idempotency_key: t.idempotencyKey });
const grant = (g: GrantEntry) => ({ kind: g.kind, ...entry(g) });

const invalid = (message: string, param: string) => new ShimError("invalid_request", { message, param });
