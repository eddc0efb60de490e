import { type ClientRequest, request } from "node:http";
import type { Harness } from "./shim-harness.ts";

/**
 * A client that asks the shim for a large non-streamed answer (512 embeddings of 4096 floats,
 * about 24 MB: more than the sockets between the shim and the client hold) and stops reading it
 * once its headers came, so the shim is still writing it. Resolves then, with the request for the
 * test to destroy at its end. `headers`: more to send (an x-request-id, from a trusted proxy).
 */
export async function stalledEmbeddingsReader(h: Harness, key: string, headers: Record<string, string> = {}): Promise<ClientRequest> {
  h.fake.set({ embeddingDims: 4096 });
  const input = Array.from({ length: 512 }, (_, i) => `passage ${i}`);
  const req = request(`${h.url}/v1/embeddings`, { method: "POST", headers: { ...headers, authorization: `Bearer ${key}`, "content-type": "application/json" } });
  req.on("error", () => {});
  await new Promise<void>((resolve) => {
    req.on("response", (res) => (res.pause(), resolve()));
    req.end(JSON.stringify({ model: "bge-m3", input, encoding_format: "float" }));
  });
  return req;
}
