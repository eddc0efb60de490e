import type { FastifyRequest } from "fastify";
import { ShimError } from "../errors.ts";

/**
 * `?batch=1` asks for the batch price, `?batch=0` (or none) for the standard one. Anything else
 * (`true`, `2`, the parameter twice) is refused: a client that believes it asked for the batch
 * price must not be charged the other in silence. The free read routes (/v1/models,
 * /v1/models/{id}, /v1/usage) check it too and ignore its value: a client sending it with every
 * request (the SDKs' `defaultQuery`) is served there, and a wrong value is the same 400 anywhere.
 */
export function batchAsked(request: FastifyRequest): boolean {
  const value = (request.query as Record<string, unknown> | undefined)?.batch;
  if (value === undefined || value === "0") return false;
  if (value === "1") return true;
  throw new ShimError("invalid_request", { param: "batch", message: "Query parameter 'batch' must be 1 (the batch price) or 0, given once." });
}
