import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it } from "vitest";

const SRC = fileURLToPath(new URL("../../api-shim/src/", import.meta.url));
const SCRIPTS = fileURLToPath(new URL("../../scripts/", import.meta.url));

/** The modules a file loads when it runs: relative imports and re-exports, not those of types only (Node strips them). */
function runtimeImports(file: string): string[] {
  const source = ts.createSourceFile(file, readFileSync(file, "utf8"), ts.ScriptTarget.Latest);
  const found: string[] = [];
  for (const statement of source.statements) {
    let from: ts.Expression | undefined;
    if (ts.isImportDeclaration(statement)) {
      const clause = statement.importClause;
      const bindings = clause?.namedBindings;
      const typesOnly = clause !== undefined && (clause.isTypeOnly || (!clause.name && bindings !== undefined && ts.isNamedImports(bindings) && bindings.elements.length > 0 && bindings.elements.every((e) => e.isTypeOnly)));
      if (!typesOnly) from = statement.moduleSpecifier;
    } else if (ts.isExportDeclaration(statement) && !statement.isTypeOnly) {
      from = statement.moduleSpecifier;
    }
    if (from && ts.isStringLiteral(from) && from.text.startsWith(".")) found.push(resolve(dirname(file), from.text));
  }
  return found;
}

/** Every cycle of the graph's strongly connected parts (Tarjan), each as its files, sorted. */
function cycles(graph: Map<string, string[]>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string) => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const part: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      part.push(relative(resolve(SRC, "../.."), w));
    } while (w !== v);
    if (part.length > 1 || graph.get(v)!.includes(v)) found.push(part.sort());
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

describe("api-shim/src's modules", () => {
  // A cycle makes a module's exports undefined while another in the cycle runs its top level, and
  // hides which concern depends on which (routes importing app.ts, which registers them).
  it("import one another without a cycle", () => {
    const files = readdirSync(SRC, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".ts")).map((f) => join(SRC, f));
    expect(files.length).toBeGreaterThan(50);
    const graph = new Map(files.map((f) => [f, runtimeImports(f)] as const));
    expect(cycles(graph)).toEqual([]);
  });
});

describe("scripts/'s modules", () => {
  // The same for the operator scripts: scripts/lib's modules share helpers (admin-client.ts's
  // isMissingRoute) rather than copy them, which only holds while none imports another both ways
  // (request-rows.ts and admin-client.ts share request-shapes.ts for it).
  it("import one another without a cycle", () => {
    const files = readdirSync(SCRIPTS, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".ts")).map((f) => join(SCRIPTS, f));
    expect(files.length).toBeGreaterThan(20);
    const graph = new Map(files.map((f) => [f, runtimeImports(f)] as const));
    expect(cycles(graph)).toEqual([]);
  });
});
