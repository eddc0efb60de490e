// Headings' anchors as GitHub makes them, for tests that check links into the docs.

/** GitHub's anchor of a heading: lower case, punctuation (backticks, dots, parentheses…) dropped, spaces as hyphens. */
export function slug(heading: string): string {
  return heading.toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-");
}

/** Fenced code blocks: a `# comment` line in one is no heading. */
const FENCED = /^[ \t]*(```|~~~)[^\n]*\n[\s\S]*?^[ \t]*\1/gm;

/** The anchors a Markdown text's headings get (outside fenced code), a repeated one numbered as GitHub does. */
export function anchorsOf(md: string): Set<string> {
  const seen = new Map<string, number>();
  const anchors = new Set<string>();
  const prose = md.replace(FENCED, "");
  for (const m of prose.matchAll(/^#{1,6} +(.+?) *$/gm)) {
    const base = slug(m[1]!);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}

/** The section whose heading has the anchor `anchor`: its heading and text, up to the next heading of its level or above. */
export function sectionAt(md: string, anchor: string): string {
  const fenced = [...md.matchAll(FENCED)].map((m) => [m.index, m.index + m[0].length] as const);
  const headings = [...md.matchAll(/^(#{1,6}) +(.+?) *$/gm)].filter((m) => !fenced.some(([from, to]) => m.index >= from && m.index < to));
  const at = headings.findIndex((m) => slug(m[2]!) === anchor);
  if (at === -1) throw new Error(`no heading with the anchor #${anchor}`);
  const level = headings[at]![1]!.length;
  const next = headings.slice(at + 1).find((m) => m[1]!.length <= level);
  return md.slice(headings[at]!.index, next?.index ?? md.length);
}
