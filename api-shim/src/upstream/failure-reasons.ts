/**
 * Every reason shim_upstream_failures_total (and, for what the client is told is its own error,
 * shim_upstream_refusals_total) is counted under, besides `status_<code>`, the upstream's error
 * status: the one list, which the type below holds every caller to and docs/operations.md's
 * runbook row is checked against (test/api-shim/upstream-failure-reasons.test.ts). A module of its own,
 * so the metrics can export each reason at 0 without importing the transport.
 */
export const UPSTREAM_FAILURE_REASONS = [
  "upstream_error", "upstream_timeout", "stream_error", "stream_cut", "no_usage", "answer_too_large", "error_body", "not_a_stream", "not_json", "not_a_model_list",
] as const;
export type UpstreamFailureReason = (typeof UPSTREAM_FAILURE_REASONS)[number] | `status_${number}`;
