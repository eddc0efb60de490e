// Headings' anchors as GitHub makes them, for tests that check links into the docs.

/** GitHub's anchor of a heading: lower case, punctuation (backticks, dots, parentheses…) dropped, spaces as hyphens. */
export function slug(heading: string): string {
  return heading.toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-");
}

/** The anchors a Markdown text's headings get (outside fenced code), a repeated one numbered as GitHub does. */
export function anchorsOf(md: string): Set<string> {
  const seen = new Map<string, number>();
  const anchors = new Set<string>();
  const prose = md.replace(/^[ \t]*(```|~~~)[^\n]*\n[\s\S]*?^[ \t]*\1/gm, "");
  for (const m of prose.matchAll(/^#{1,6} +(.+?) *$/gm)) {
    const base = slug(m[1]!);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}
