// The known name a mistyped one most likely meant (`--credit` for `--credits`), for a "Did you
// mean" in an error message. Only a close match counts: a wrong suggestion sends the user the
// wrong way, worse than none.

/** Edits (insert, delete, replace, swap two neighbours) from `a` to `b`: `nmae` is one from `name`. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The one name in `known` that `typed` is close to, compared without case: at most 2 edits, and
 * at most one per 3 characters typed (so `--x` is close to nothing), else the one name it is a
 * prefix of (2 characters at least). Undefined when none is, or when two are equally close.
 */
export function closestName(typed: string, known: readonly string[]): string | undefined {
  const t = typed.toLowerCase();
  const limit = t.length < 2 ? 0 : Math.min(2, Math.max(1, Math.floor(t.length / 3)));
  const scored = known.map((name) => ({ name, d: editDistance(t, name.toLowerCase()) })).filter((s) => s.d <= limit);
  const best = Math.min(...scored.map((s) => s.d));
  const nearest = scored.filter((s) => s.d === best);
  if (nearest.length === 1) return nearest[0]!.name;
  if (nearest.length > 1) return undefined;
  const extended = t.length >= 2 ? known.filter((name) => name.toLowerCase().startsWith(t)) : [];
  return extended.length === 1 ? extended[0] : undefined;
}
