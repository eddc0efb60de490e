/**
 * Control characters (C0 and DEL) in text that names things (key names, model names): none has
 * a use there, and a NUL cannot be stored in a Postgres text column, so it would fail a write
 * deep in the store instead of being a 400. Notes may hold tabs and line breaks.
 */
export function hasControlCharacters(text: string, options: { lineBreaks?: boolean } = {}): boolean {
  return (options.lineBreaks ? /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/ : /[\u0000-\u001f\u007f]/).test(text);
}

/** A request URL's path, without its query string. */
export function urlPath(url: string): string {
  const q = url.indexOf("?");
  return q === -1 ? url : url.slice(0, q);
}

/**
 * Text that names or describes things as typed: no control characters (see above) and no lone
 * surrogate, which no store keeps as sent (written as U+FFFD, or refused by Postgres's jsonb:
 * a 503 where SQLite answered 201).
 */
export function isPlainText(text: string, options: { lineBreaks?: boolean } = {}): boolean {
  return text.isWellFormed() && !hasControlCharacters(text, options);
}
