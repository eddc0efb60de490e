/**
 * vLLM's /metrics as the vLLM the stack pins writes it (vllm/v1/metrics/loggers.py): Prometheus'
 * text format, `vllm:` names, each series labelled with the engine's index and the served model
 * name. Only the series the kit's alerts read (templates/operator/prometheus/alerts.yml), and only
 * values the fake can compute honestly: running and waiting from the requests it holds; the KV
 * cache's usage and the preemptions are constant 0 (the fake has no cache to fill).
 */
export interface FakeVllmLoad {
  modelName: string;
  running: number;
  waiting: number;
}

export function vllmMetrics({ modelName, running, waiting }: FakeVllmLoad): string {
  const labels = `{engine="0",model_name="${modelName.replace(/["\\]/g, "\\$&")}"}`;
  const series = (name: string, type: string, help: string, value: number) => `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${name}${labels} ${value.toFixed(1)}\n`;
  return series("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", running) +
    series("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", waiting) +
    series("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", 0) +
    series("vllm:num_preemptions_total", "counter", "Cumulative number of preemption from the engine.", 0);
}

/** The Content-Type prometheus_client answers with. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";
