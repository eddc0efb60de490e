// The shapes of the shim's GET /admin/requests answers (routes/requests.ts), apart from what
// report-usage does with them (request-rows.ts): the admin client checks an answer against them,
// and request-rows.ts uses the admin client's isMissingRoute, so neither imports the other both ways.

/** A request's ledger row as the API shows it (null: not recorded when the row was written). */
export interface RequestRowJson {
  readonly request_id: string;
  readonly key_id: string;
  readonly at: string;
  readonly route: string;
  readonly model: string;
  readonly status: number;
  readonly stream: boolean | null;
  readonly batch: boolean | null;
  readonly served: boolean | null;
  readonly reported: boolean;
  readonly prompt_tokens: number;
  readonly cached_tokens: number | null;
  readonly completion_tokens: number;
  readonly total_tokens: number;
  readonly cost: number;
  readonly price_id: string | null;
  readonly ms: number | null;
  /** A joined retry's or replayed re-send's row: the request whose charge it shares (absent from a shim before 2026-12-08). */
  readonly joined_request_id?: string | null;
}

export interface RequestList { readonly object: "list"; readonly data: RequestRowJson[] }

export interface RequestsQuery { readonly key: string; readonly from?: string; readonly to?: string; readonly format: "json" | "csv" }

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const isRow = (v: unknown): v is RequestRowJson => isObject(v) && typeof v.request_id === "string" && typeof v.status === "number" && typeof v.cost === "number";

/** The shape of GET /admin/requests/{id}'s answer, as the admin client checks it. */
export const REQUEST_LIST = {
  what: 'a "list" of ledger rows',
  is: (v: unknown): v is RequestList => isObject(v) && v.object === "list" && Array.isArray(v.data) && v.data.every(isRow),
};
