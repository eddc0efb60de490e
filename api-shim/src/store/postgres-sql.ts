/**
 * The Postgres store's statements on the hot path and for the books (postgres-store.ts runs
 * them). Each is one round trip, atomic on its own.
 */
/**
 * The hold: the key row's conditional UPDATE decides (re-checked under the row lock: live, its
 * hash still the one the request authenticated with, $7 (null: not checked), its allow-list has
 * the model $6 (null: not checked), and balance − held covers it), the reservation row records it.
 */
export const RESERVE = `WITH k AS (UPDATE keys SET held = held + $3
    WHERE id = $2 AND balance - held >= $3 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $5) AND ($6::text IS NULL OR models IS NULL OR models ? $6)
      AND ($7::text IS NULL OR hash = $7)
    RETURNING balance - held AS available),
  r AS (INSERT INTO reservations (id, key_id, amount, owner, at) SELECT $1, $2, $3, $4, $5 FROM k)
  SELECT available FROM k`;
/**
 * The settlement: the reservation gone, the request's ledger row (−charge and its usage), balance
 * −= charge, held −= hold; returns the charge: the cost, at most the hold's amount (a cost beyond
 * it would take credit other holds count on).
 */
export const SETTLE = `WITH r AS (DELETE FROM reservations WHERE id = $1 RETURNING key_id, amount, LEAST($2::bigint, amount) AS charge),
  l AS (INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms, served, price_id, batch, cached_tokens)
        SELECT key_id, $3, -charge, 'usage', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 FROM r),
  k AS (UPDATE keys SET balance = balance - r.charge, held = held - r.amount FROM r WHERE keys.id = r.key_id RETURNING balance - held AS available, r.charge AS charged)
  SELECT available, charged FROM k`;
/**
 * The settlement of a request whose hold a sweep released before it settled (see settle): its
 * ledger row all the same, charged $2 (the cost, at most the hold: settleWithoutHold) when what
 * the key has available (balance − held) covers it, else 0, so no other request's hold is eaten
 * into. It locks the key's row first, whatever it charges, and holds it to its commit: a second
 * try of the same settlement (settleAgainOn, which takes that lock before it looks for this
 * one's ledger row) then waits for this one rather than write a second row beside it.
 * $1 is the key; the rest as in SETTLE.
 */
export const SETTLE_UNRESERVED = `WITH k AS (UPDATE keys SET balance = keys.balance - c.charge
      FROM (SELECT id, CASE WHEN balance - held >= $2 THEN $2::bigint ELSE 0 END AS charge FROM keys WHERE id = $1 FOR UPDATE) c
      WHERE keys.id = c.id RETURNING keys.balance - keys.held AS available, c.charge AS charged),
  l AS (INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms, served, price_id, batch, cached_tokens)
        SELECT $1, $3, -charged, 'usage', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 FROM k)
  SELECT available, charged FROM k`;
/**
 * A settlement's ledger row, by its key, time and request id (ledger_key_at): whether a settlement
 * whose answer was lost had committed, and what it charged.
 */
export const SETTLED = "SELECT -amount AS charged FROM ledger WHERE key_id = $1 AND at = $2 AND ref = $3 AND kind = 'usage' LIMIT 1";
export const AVAILABLE = "SELECT balance - held AS available FROM keys WHERE id = $1";
/** Waits for (and takes, to the end of its transaction) the key's row: what a settlement's second try does before it looks (settleAgainOn). */
export const LOCK_KEY = "SELECT 1 FROM keys WHERE id = $1 FOR UPDATE";
/**
 * Why a hold was refused: what is available, the balance, whether the key was revoked, expired
 * (at $2) or rotated (its hash is no longer $4; null: not checked), and whether its allow-list
 * lacks the model $3.
 */
/** A joined request's row (store.ts, JoinedRow): nothing charged, served or counted, naming the request it joined. */
export const JOINED_ROW = `INSERT INTO ledger (key_id, at, amount, kind, ref, route, model, status, prompt_tokens, completion_tokens, stream, ms, served, batch, cached_tokens, joined)
  VALUES ($1, $2, 0, 'usage', $3, $4, $5, $6, 0, 0, false, $7, false, $8, 0, $9)`;
export const REFUSAL = `SELECT balance - held AS available, balance, (revoked_at IS NOT NULL OR coalesce(expires_at <= $2, false) OR coalesce(hash <> $4, false)) AS inactive,
    ($3::text IS NOT NULL AND models IS NOT NULL AND NOT (models ? $3)) AS not_allowed FROM keys WHERE id = $1`;
/** Releases one hold, uncharged (no ledger row): what a failed request's hold becomes. */
/** Releases the holds among ids $1 (a batch), uncharged; returns the ids it found. */
export const RELEASE = `WITH r AS (DELETE FROM reservations WHERE id = ANY($1::text[]) RETURNING id, key_id, amount),
  per AS (SELECT key_id, sum(amount) AS amount FROM r GROUP BY key_id),
  k AS (UPDATE keys SET held = held - per.amount FROM per WHERE keys.id = per.key_id)
  SELECT id FROM r`;
export const AUDIT = `SELECT k.id AS "keyId", k.balance, k.held, coalesce(l.total, 0)::bigint AS "ledgerSum",
    coalesce(r.n, 0)::bigint AS reservations, coalesce(r.total, 0)::bigint AS "reservedSum"
  FROM keys k
  LEFT JOIN (SELECT key_id, sum(amount) AS total FROM ledger GROUP BY key_id) l ON l.key_id = k.id
  LEFT JOIN (SELECT key_id, count(*) AS n, sum(amount) AS total FROM reservations GROUP BY key_id) r ON r.key_id = k.id
  ORDER BY k.id COLLATE "C"`;
/**
 * Whether the database takes no writes: a hot standby (a replica, a demoted primary) or a
 * session read-only by default (default_transaction_read_only, which managed servers set when
 * their storage is full). Reads and the liveness lock still work there; holds do not (IN_RECOVERY
 * is what the liveness lock is judged by).
 */
export const IS_READ_ONLY = "pg_is_in_recovery() OR current_setting('transaction_read_only')::bool";
export const READ_ONLY = `SELECT ${IS_READ_ONLY} AS read_only`;
/**
 * Whether the server is a standby (a replica, a demoted primary): where the liveness lock must
 * not be held, since holds are made elsewhere. A primary read-only by default still is the
 * server the holds are on: the lock stays there, or other replicas would sweep this one's holds
 * once it takes writes again.
 */
export const IN_RECOVERY = "SELECT pg_is_in_recovery() AS read_only";
