/**
 * A client of a running Prometheus' HTTP API (`http://127.0.0.1:<port>/api/v1`), for the tests
 * that run the kit's prometheus.yml and alerts.yml in a real Prometheus: instant queries, the
 * active targets, the alerting rules with their alerts.
 */
export interface Sample { metric: Record<string, string>; value: [number, string] }
export interface Target { labels: Record<string, string>; health: string; lastError: string }
export interface Rule { name: string; health: string; lastError?: string; state: string; alerts: { labels: Record<string, string>; state: string; activeAt: string }[] }

/** An alert that went active: pending, or firing once its `for:` has passed (a loaded machine's waits can take it past). */
export const ACTIVE = ["pending", "firing"];

export function prometheusApi(port: number) {
  const base = `http://127.0.0.1:${port}/api/v1`;
  async function api<T>(path: string): Promise<T> {
    const res = await fetch(base + path);
    const body = (await res.json()) as { status: string; data: T; error?: string };
    if (body.status !== "success") throw new Error(`${path}: ${res.status} ${body.error}`);
    return body.data;
  }
  const rules = () => api<{ groups: { rules: Rule[] }[] }>("/rules?type=alert").then((d) => d.groups.flatMap((g) => g.rules));
  const targets = () => api<{ activeTargets: Target[] }>("/targets?state=active").then((d) => d.activeTargets);
  return {
    query: (promql: string) => api<{ result: Sample[] }>(`/query?query=${encodeURIComponent(promql)}`).then((d) => d.result),
    targets,
    target: async (job: string) => (await targets()).find((t) => t.labels.job === job),
    rules,
    rule: async (name: string) => (await rules()).find((r) => r.name === name),
  };
}
