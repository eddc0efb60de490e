import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { isNode, parse, parseDocument, Scalar, visit, type Document } from "yaml";
import { REPO_ROOT } from "../repo-root.ts";

/** The repository's templates/ directory (files that end up on the host). */
export const TEMPLATES_DIR = pathToFileURL(join(REPO_ROOT, "templates/"));

export function readTemplate(relativePath: string): string {
  return readFileSync(new URL(relativePath, TEMPLATES_DIR), "utf8");
}

/** A YAML template as an object, for render functions to fill in and write with `yaml`. */
export function readYamlTemplate<T>(relativePath: string): T {
  return parse(readTemplate(relativePath)) as T;
}

/** A YAML template as a document: filled with `setIn`, it keeps the template's comments. */
export function readYamlDocument(relativePath: string): Document {
  const doc = parseDocument(readTemplate(relativePath));
  if (doc.errors.length > 0) throw new Error(`templates/${relativePath}: ${doc.errors[0]?.message}`);
  return doc;
}

/** What `text`, written as a plain scalar, reads back as in this YAML version, or an error. */
function readPlain(text: string, version: "1.1" | "1.2"): unknown {
  try {
    return parse(text, { version });
  } catch (error) {
    return error;
  }
}

/**
 * Whether `text` is plain in YAML 1.2 (the `yaml` package writes it unquoted) but something else
 * in YAML 1.1, where `yes`, `on`, `Off`, `1_000`, `1:30`, `0b101` and `2025-01-01` are booleans,
 * numbers and dates.
 */
function onlyYaml12String(text: string): boolean {
  return readPlain(text, "1.2") === text && readPlain(text, "1.1") !== text;
}

/**
 * A document as YAML text that YAML 1.1 readers read as written: a string that YAML 1.1 would
 * read as anything else is double-quoted (onlyYaml12String). The `yaml` package quotes only for
 * its own YAML 1.2, but LiteLLM loads its config with PyYAML (YAML 1.1: a model named "yes" was
 * True there), and Compose's parsers read compose.yaml with YAML 1.1 types too (docker-compose 1.x
 * with PyYAML; Compose v2's Go yaml.v3 takes `1_000` and `0b101` for numbers and `2025-01-01` for
 * a date, beside YAML 1.2's own). Every other string is written as before, so a file of ordinary
 * names renders byte for byte as it did (a changed file restarts its service).
 */
export function yamlText(doc: Document): string {
  visit(doc, {
    // `setIn` stores plain values as given; as nodes, their strings are visited too.
    Pair(_key, pair) {
      if (pair.key !== null && pair.key !== undefined && !isNode(pair.key)) pair.key = doc.createNode(pair.key);
      if (pair.value !== null && pair.value !== undefined && !isNode(pair.value)) pair.value = doc.createNode(pair.value);
    },
    Scalar(_key, node) {
      // Only a scalar left to the writer's choice (a template's quotes stay as written).
      if ((node.type === undefined || node.type === Scalar.PLAIN) && typeof node.value === "string" && onlyYaml12String(node.value)) node.type = Scalar.QUOTE_DOUBLE;
    },
  });
  return doc.toString({ lineWidth: 0 });
}

/**
 * Fills `{{name}}` placeholders in a text template (nginx.conf, systemd units). Every
 * placeholder must have a value and every value must be used, so a renamed placeholder fails
 * the render instead of shipping a literal `{{…}}` to the host.
 */
export function fillTemplate(text: string, values: Readonly<Record<string, string | number>>, name = "template"): string {
  const used = new Set<string>();
  const out = text.replace(/\{\{(\w+)\}\}/g, (_match, key: string) => {
    const value = values[key];
    if (value === undefined) throw new Error(`${name}: no value for placeholder {{${key}}}`);
    used.add(key);
    return String(value);
  });
  const unused = Object.keys(values).filter((k) => !used.has(k));
  if (unused.length > 0) throw new Error(`${name}: values without a placeholder: ${unused.join(", ")}`);
  return out;
}

/** A template file of templates/ filled in; errors name the file. */
export function fillTemplateFile(relativePath: string, values: Readonly<Record<string, string | number>>): string {
  return fillTemplate(readTemplate(relativePath), values, relativePath);
}
