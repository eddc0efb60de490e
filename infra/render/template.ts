import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parse, parseDocument, type Document } from "yaml";
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
