import * as tls from "node:tls";
import { parse } from "yaml";
import { validateConfig } from "../../infra/config.ts";
import { renderBundle } from "../../infra/render/bundle.ts";
import { NGINX_HTTP_PORT, NGINX_HTTPS_PORT, NGINX_LOCAL_PORT } from "../../infra/render/compose.ts";
import { startNginx, type RunningNginx } from "./nginx.ts";
import { startShim, type Harness } from "./shim-harness.ts";

export interface RenderedEdge {
  shim: Harness;
  nginx: RunningNginx;
  /** An enterprise key (no rate limits of its own) with 1,000 credits. */
  key: string;
  close(): Promise<void>;
}

export interface RenderedEdgeOptions {
  stack: string;
  /** Stack settings over a self-signed stack serving qwen2.5-7b in us-ord. */
  settings: Record<string, unknown>;
  /**
   * Where nginx listens on loopback: the rendered ports (8080, 8443, and 8081 for the host's own
   * requests) unless a test file runs beside another nginx test.
   */
  ports?: { http: number; https: number; local: number };
  /** The rendered shim config, changed for the test. */
  shimFile?: (rendered: Record<string, unknown>) => Record<string, unknown>;
  /** The rendered nginx.conf, changed for the test. */
  nginxConf?: (rendered: string) => string;
  /** Days until nginx's certificate expires (1 unless given; negative: it has expired). */
  certificateDays?: number;
}

/**
 * A stack's edge as deployed, on loopback: Debian's nginx with the rendered nginx.conf, in front
 * of the shim with the rendered shim config (nginx its trusted proxy, as on the Compose network),
 * in front of the fake vLLM (nginx's /metrics/vllm reaches it too). nginx's certificate is trusted by this process's TLS clients.
 */
export async function startRenderedEdge(options: RenderedEdgeOptions): Promise<RenderedEdge> {
  const result = validateConfig({
    region: "us-ord",
    model: { id: "Qwen/Qwen2.5-7B-Instruct", servedName: "qwen2.5-7b" },
    tls: { mode: "self-signed" },
    ...options.settings,
  }, { stack: options.stack });
  if (!result.ok) throw new Error(JSON.stringify(result.problems));
  const bundle = renderBundle(result.config, { images: result.config.images, bootstrapKeys: [] });
  const file = parse(bundle.get("shim/config.yaml")!) as Record<string, unknown>;
  const shim = await startShim({
    file: options.shimFile ? options.shimFile(file) : file,
    env: { SHIM_TRUST_PROXY: "127.0.0.1/32" },
    fake: { models: [{ name: "qwen2.5-7b", root: "Qwen/Qwen2.5-7B-Instruct", maxModelLen: 8192 }], apiKey: "upstream-secret" },
  });
  try {
    const { key } = await shim.createKey({ name: options.stack, credits: 1000, tier: "enterprise" });
    const rendered = bundle.get("nginx/nginx.conf")!;
    const { http, https, local } = options.ports ?? { http: NGINX_HTTP_PORT, https: NGINX_HTTPS_PORT, local: NGINX_LOCAL_PORT };
    const nginx = await startNginx(options.nginxConf ? options.nginxConf(rendered) : rendered, new URL(shim.url).host, [http, https, local],
      { listen: new Map([[NGINX_HTTP_PORT, http], [NGINX_HTTPS_PORT, https], [NGINX_LOCAL_PORT, local]]), certificateDays: options.certificateDays,
        vllmAddress: new URL(shim.fake.url).host });
    tls.setDefaultCACertificates([...tls.getCACertificates("default"), nginx.certificate]);
    return { shim, nginx, key, close: async () => { await nginx.stop(); await shim.close(); } };
  } catch (e) {
    await shim.close();
    throw e;
  }
}
