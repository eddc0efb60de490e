import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { REPO_ROOT } from "../repo-root.ts";

/** The shim's package inside the repository. */
export const SHIM_PACKAGE_DIR = "api-shim";

interface LockEntry {
  version?: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
  dev?: boolean;
  devOptional?: boolean;
  link?: boolean;
  [field: string]: unknown;
}

interface Lockfile {
  name?: string;
  version?: string;
  lockfileVersion: number;
  requires?: boolean;
  packages: Record<string, LockEntry>;
}

interface PackageJson {
  name: string;
  version: string;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  [field: string]: unknown;
}

/**
 * The files of the shim's source package that go into the bundle under api-shim/: everything
 * its Dockerfile copies, with package.json stripped of dev dependencies and a standalone
 * package-lock.json, so `docker build` on the host needs nothing outside the bundle.
 */
export function shimSourceFiles(root = REPO_ROOT): Map<string, string> {
  const dir = join(root, SHIM_PACKAGE_DIR);
  const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as PackageJson;
  const rootLock = JSON.parse(readFileSync(join(root, "package-lock.json"), "utf8")) as Lockfile;
  const { devDependencies: _dev, ...productionPkg } = pkg;
  const files = new Map<string, string>([
    ["Dockerfile", readFileSync(join(dir, "Dockerfile"), "utf8")],
    [".dockerignore", readFileSync(join(dir, ".dockerignore"), "utf8")],
    ["package.json", `${JSON.stringify(productionPkg, null, 2)}\n`],
    ["package-lock.json", `${JSON.stringify(standaloneLockfile(rootLock, productionPkg), null, 2)}\n`],
  ]);
  for (const file of listFiles(join(dir, "src"))) {
    files.set(relative(dir, file), readFileSync(file, "utf8"));
  }
  return files;
}

function listFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? listFiles(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : []).sort();
}

/**
 * A lockfile for the shim alone, derived from the workspace's root lockfile: the shim's
 * production dependencies and theirs, at exactly the locked versions and integrity hashes.
 *
 * Dependencies are resolved the way Node resolves them (nearest node_modules upwards from the
 * requiring package), then laid out for a project whose root is the shim: packages the
 * workspace nested under api-shim/node_modules move up to node_modules. If two different
 * packages would land on the same path, this throws rather than write a lockfile that installs
 * the wrong version.
 */
export function standaloneLockfile(rootLock: Lockfile, pkg: PackageJson): Lockfile {
  const packages = rootLock.packages;
  const from = SHIM_PACKAGE_DIR;
  const out: Record<string, LockEntry> = {};
  const placedFrom = new Map<string, string>();
  const queue: [location: string, name: string, optional: boolean][] =
    Object.keys(pkg.dependencies ?? {}).map((name) => [from, name, false]);

  while (queue.length > 0) {
    const [requiredBy, name, optional] = queue.shift()!;
    const location = resolveLocation(packages, requiredBy, name);
    if (!location) {
      if (optional) continue;
      throw new Error(`standalone lockfile: ${requiredBy} needs ${name}, which the root lockfile does not have`);
    }
    const target = location.startsWith(`${from}/`) ? location.slice(from.length + 1) : location;
    const previous = placedFrom.get(target);
    if (previous !== undefined) {
      if (previous !== location) {
        throw new Error(`standalone lockfile: ${previous} and ${location} would both be installed at ${target}`);
      }
      continue;
    }
    placedFrom.set(target, location);
    const entry = packages[location]!;
    const { dev: _dev, devOptional: _devOptional, ...kept } = entry;
    out[target] = kept;
    for (const dep of Object.keys(entry.dependencies ?? {})) queue.push([location, dep, false]);
    for (const dep of Object.keys(entry.optionalDependencies ?? {})) queue.push([location, dep, true]);
    for (const dep of Object.keys(entry.peerDependencies ?? {})) {
      queue.push([location, dep, entry.peerDependenciesMeta?.[dep]?.optional === true]);
    }
  }

  // By code unit, not localeCompare: that follows the operator's LANG (lt_LT puts y before j),
  // and a lockfile that differs by machine changes bundleHash, so pulumi up would redeploy.
  const sorted = Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const rootEntry: LockEntry = { name: pkg.name, version: pkg.version };
  for (const field of ["license", "dependencies", "engines"]) {
    if (pkg[field] !== undefined) rootEntry[field] = pkg[field];
  }
  return { name: pkg.name, version: pkg.version, lockfileVersion: 3, requires: true, packages: { "": rootEntry, ...sorted } };
}

/** Where Node would find `name` when `requiredBy` requires it: the nearest node_modules upwards. */
function resolveLocation(packages: Record<string, LockEntry>, requiredBy: string, name: string): string | undefined {
  let base = requiredBy;
  for (;;) {
    const candidate = base ? `${base}/node_modules/${name}` : `node_modules/${name}`;
    const entry = packages[candidate];
    if (entry && !entry.link) return candidate;
    if (!base) return undefined;
    const up = base.lastIndexOf("/node_modules/");
    base = up >= 0 ? base.slice(0, up) : "";
  }
}
