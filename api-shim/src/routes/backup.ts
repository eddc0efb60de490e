import { open } from "node:fs/promises";
import type { FastifyInstance } from "fastify";
import type { ShimContext } from "../context.ts";
import { ShimError } from "../errors.ts";
import { untilLeftOrCut } from "../client/client-left.ts";
import { onlyKnown } from "../requests/known-members.ts";
import { fileStamp } from "../requests/period.ts";
import { BackupNoRoomError, BackupNotPossibleError, BackupRunningError, GROWTH_BYTES, showMiB } from "../store/sqlite-backup.ts";
import { MIN_FREE_BYTES } from "../store/sqlite-space.ts";

const POSTGRES = "This shim's ledger is in Postgres: back it up with pg_dump or your provider's backups (docs/operations.md, \"Backup and restore of the ledger\"). GET /admin/backup copies a SQLite ledger only.";

/**
 * GET /admin/backup (beyond DESIGN.md's routes, docs/decisions.md): the SQLite ledger as one
 * consistent SQLite file, for `npm run backup-ledger`. Linode does not back volumes up, and the
 * ledger (keys' hashes, balances, every charge) is on one. The copy is made off the request
 * path's thread (sqlite-backup.ts), sent with its length (the script checks it arrived whole),
 * and removed once sent or its client leaves. Admin token and adminCidrs as every /admin route.
 */
export function backupRoutes(app: FastifyInstance, ctx: ShimContext): void {
  app.get("/admin/backup", async (request, reply) => {
    onlyKnown(request.query as object, [], "query parameter");
    const store = ctx.store;
    if (store.backup === undefined) throw new ShimError("backup_not_supported", { message: POSTGRES });
    const backup = await untilLeftOrCut(request, reply, (signal) => store.backup!(signal)).catch((e: unknown) => {
      throw refusal(e);
    });
    // Opened before anything may remove it; then removed however the answer ends: sent whole, its
    // client gone mid-way, or the server stopping (the open file is read to its end all the same).
    const file = await open(backup.path, "r").catch(async (e: unknown) => {
      await backup.remove();
      throw e;
    });
    reply.raw.once("close", () => void backup.remove());
    if (reply.raw.destroyed) void backup.remove();
    return reply
      .header("content-type", "application/vnd.sqlite3")
      .header("content-disposition", `attachment; filename="shim-${fileStamp(ctx.clock.now())}.db"`)
      .header("content-length", String(backup.size))
      .header("cache-control", "no-store")
      .send(file.createReadStream());
  });
}

/** A store's refusal of a backup as the API answers it; anything else as it is (the error handler's). */
function refusal(e: unknown): unknown {
  if (e instanceof BackupRunningError) return new ShimError("backup_in_progress");
  if (e instanceof BackupNotPossibleError) return new ShimError("backup_not_supported", { message: `Nothing to back up: ${e.message}.` });
  if (e instanceof BackupNoRoomError) {
    return new ShimError("backup_no_room", {
      message: `Not enough free space on the ledger's volume for a backup: it needs ${e.needed} bytes (${showMiB(e.needed)}: the copy, up to the ledger's size; room for the ledger to grow while the copy is there, ${GROWTH_BYTES / 2 ** 20} MiB or a tenth of the copy; and the ${MIN_FREE_BYTES / 2 ** 20} MiB the shim keeps free to go on serving), and ${e.free} bytes (${showMiB(e.free)}) are free. Free space on the volume (df -h /mnt/gpu-sandbox; a model no longer served), or raise volumeSizeGb, then try again.`,
      extra: { bytes_needed: e.needed, bytes_free: e.free },
    });
  }
  return e;
}
