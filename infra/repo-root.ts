import { fileURLToPath } from "node:url";

/** The repository's root directory: stacks/, templates/, api-shim/ and out/ are found from it. */
export const REPO_ROOT = fileURLToPath(new URL("../", import.meta.url));
