/**
 * A request id the shim takes from its trusted proxy (nginx's $request_id) rather than making its
 * own (app.ts), and so every id a ledger row can have: GET /admin/requests/{id} answers any other
 * 404 without asking the store.
 */
export const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
