/**
 * A ustar archive of regular files, the same bytes for the same files on every machine: no
 * modification times (0; the host extracts with `tar -m`), owner root (uid/gid 0). It carries
 * the host's files inside its cloud-init user data (see cloud-init.ts), where a different
 * encoding of the same files would replace the instance.
 */
export interface TarFile {
  /** Absolute: written without its leading "/", as GNU tar writes it, and extracted under `-C /`. */
  readonly path: string;
  readonly content: string;
  readonly mode: number;
}

const BLOCK = 512;

export function tarArchive(files: readonly TarFile[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const file of files) {
    const body = Buffer.from(file.content, "utf8");
    parts.push(header(file.path, file.mode, body.length), body, new Uint8Array(padding(body.length)));
  }
  parts.push(new Uint8Array(2 * BLOCK)); // the end-of-archive marker
  return Buffer.concat(parts);
}

function header(path: string, mode: number, size: number): Uint8Array {
  const name = Buffer.from(path.replace(/^\/+/, ""), "utf8");
  // ustar's name field holds 100 bytes; the host's paths are far shorter, so no prefix field.
  if (name.length > 99 || !path.startsWith("/")) throw new Error(`tar: "${path}" must be an absolute path under 100 bytes`);
  const h = Buffer.alloc(BLOCK);
  name.copy(h, 0);
  const octal = (value: number, at: number, width: number) => h.write(`${value.toString(8).padStart(width - 1, "0")}\0`, at, "ascii");
  octal(mode, 100, 8);
  octal(0, 108, 8); // uid
  octal(0, 116, 8); // gid
  octal(size, 124, 12);
  octal(0, 136, 12); // mtime
  h.write("0", 156, "ascii"); // a regular file
  h.write("ustar\0" + "00", 257, "ascii");
  h.write("root", 265, "ascii");
  h.write("root", 297, "ascii");
  // The checksum is the sum of the header's bytes with its own field counted as spaces.
  h.fill(" ", 148, 156);
  const sum = h.reduce((total, byte) => total + byte, 0);
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "ascii");
  return h;
}

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}
