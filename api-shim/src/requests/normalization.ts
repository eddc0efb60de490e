/**
 * The most bytes Unicode normalization can add to a string, worked out one code point at a time.
 *
 * NFD and NFKD decompose each code point on its own and then only reorder combining marks, so
 * the decomposed length of a string is the sum of its code points' decomposed lengths; the
 * composed forms a tokenizer applies (NFC, NFKC) are never longer. Summing, per code point, the
 * larger of its NFD and NFKD growth (never below 0) is therefore at least what any of the four
 * forms adds to the whole string. Normalizing the whole string instead took 1.4 s of the event
 * loop for an 8 MiB body of U+FDFA; this takes ~40 ms, the cost of one pass.
 */

/** Growth in bytes per code point (at most 30, U+FDFA), computed on first sight; -1 = not yet. */
let growthTable: Int8Array | null = null;

function growthOfCodePoint(table: Int8Array, cp: number): number {
  let g = table[cp]!;
  if (g < 0) {
    const ch = String.fromCodePoint(cp);
    const bytes = Buffer.byteLength(ch);
    g = Math.max(0, Buffer.byteLength(ch.normalize("NFD")) - bytes, Buffer.byteLength(ch.normalize("NFKD")) - bytes);
    table[cp] = g;
  }
  return g;
}

export function normalizationGrowthOf(s: string): number {
  // 1.1 MB, allocated the first time a non-ASCII prompt is seen; every code point's entry costs
  // two one-character normalizations once (all of Unicode: ~150 ms, once per process).
  const table = (growthTable ??= new Int8Array(0x110000).fill(-1));
  let growth = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c >= 0xd800 && c < 0xe000) {
      // A surrogate pair is one code point; a lone surrogate is sent as U+FFFD, which does not grow.
      const d = c < 0xdc00 && i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (d >= 0xdc00 && d < 0xe000) {
        growth += growthOfCodePoint(table, ((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000);
        i++;
      }
      continue;
    }
    growth += growthOfCodePoint(table, c);
  }
  return growth;
}
