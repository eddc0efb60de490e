import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";

/**
 * The kit's alerting rules (templates/operator/prometheus/alerts.yml), for the tests that hold an
 * alert's selector to what the shim really exports, and its runbook link to a section that exists.
 */
export interface AlertRule { alert: string; expr: string; annotations: { runbook: string } }

const ALERTS = join(import.meta.dirname, "..", "..", "templates", "operator", "prometheus", "alerts.yml");

/** The rule named `name`; throws when alerts.yml has none. */
export function alertRule(name: string): AlertRule {
  const rule = (parse(readFileSync(ALERTS, "utf8")) as { groups: { rules: AlertRule[] }[] }).groups.flatMap((g) => g.rules).find((r) => r.alert === name);
  if (rule === undefined) throw new Error(`alerts.yml has no alert ${name}`);
  return rule;
}

/** The sum of a scrape's samples that `name{label="value", label!="value"}` selects. */
export function selectedSum(scrape: string, selector: string): number {
  const [, name, body] = /^(\w+)\{(.*)\}$/.exec(selector)!;
  const matchers = [...body!.matchAll(/(\w+)(!?=)"([^"]*)"/g)].map((m) => ({ text: `${m[1]}="${m[3]}"`, negated: m[2] === "!=" }));
  return scrape.split("\n")
    .filter((line) => line.startsWith(`${name}{`) && matchers.every((m) => line.includes(m.text) !== m.negated))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0);
}
