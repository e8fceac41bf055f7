import { resolveFtpPath } from '../paths.js';

/** What a user may do, per directory (pyftpdlib's perm letters, spelled out). */
export const PERMISSIONS = ['list', 'read', 'write', 'append', 'delete', 'rename', 'mkdir', 'rmdir'] as const;
export type Permission = (typeof PERMISSIONS)[number];

/** Named sets for the users file. */
export const PRESETS: Readonly<Record<string, readonly Permission[]>> = {
  full: PERMISSIONS,
  'read-only': ['list', 'read'],
  // The partner file drop: upload new files, nothing else; no listing, so nothing is seen.
  'drop-box': ['write'],
};

/** Permission rules, most specific directory first; the rule for '/' is always there. */
export type PermissionRules = ReadonlyArray<{ dir: string; allowed: ReadonlySet<Permission> }>;

export const FULL_ACCESS: PermissionRules = [{ dir: '/', allowed: new Set(PERMISSIONS) }];

/**
 * Parses a users-file `permissions` value: a preset name, a list of
 * permissions, or an object mapping directories (FTP paths inside the home)
 * to either. Directories not named inherit from the nearest named parent;
 * '/' defaults to full access.
 */
export function parsePermissions(value: unknown): PermissionRules {
  if (value === undefined) return FULL_ACCESS;
  const byDir: Record<string, unknown> =
    typeof value === 'string' || Array.isArray(value) ? { '/': value } : (value as Record<string, unknown>);
  if (typeof byDir !== 'object' || byDir === null) throw new Error('must be a preset, a list or an object');
  const seen = new Set<string>();
  const rules = Object.entries(byDir).map(([dir, set]) => {
    const at = resolveFtpPath('/', dir);
    // `/pub/` and `/pub` are one directory: with two rules for it, the first spelling would silently win.
    if (seen.has(at)) throw new Error(`"${dir}" names ${at} again`);
    seen.add(at);
    return { dir: at, allowed: parseSet(set, dir) };
  });
  if (!rules.some((r) => r.dir === '/')) rules.push({ dir: '/', allowed: new Set(PERMISSIONS) });
  return rules.sort((a, b) => b.dir.length - a.dir.length);
}

function parseSet(value: unknown, dir: string): ReadonlySet<Permission> {
  if (typeof value === 'string') {
    const preset = PRESETS[value];
    if (!preset) throw new Error(`"${dir}": unknown preset "${value}" (${Object.keys(PRESETS).join(', ')})`);
    return new Set(preset);
  }
  if (!Array.isArray(value)) throw new Error(`"${dir}": must be a preset name or a list of permissions`);
  for (const p of value) {
    if (!(PERMISSIONS as readonly unknown[]).includes(p)) {
      throw new Error(`"${dir}": unknown permission "${String(p)}" (${PERMISSIONS.join(', ')})`);
    }
  }
  return new Set(value as Permission[]);
}

/** Whether the rules allow `permission` on a normalised FTP path. */
export function isAllowed(rules: PermissionRules, ftpPath: string, permission: Permission): boolean {
  const rule = rules.find((r) => r.dir === '/' || ftpPath === r.dir || ftpPath.startsWith(`${r.dir}/`));
  return rule?.allowed.has(permission) ?? false;
}

/**
 * Whether moving the directory `from` to `to` (normalised FTP paths) leaves
 * every rule below either of them as strong as it was: a rename moves a whole
 * tree at once, so without this, a stricter rule below the source could be
 * escaped (move the tree away, change the files, move it back) and one below
 * the target could be filled with content it never allowed to be written.
 * At each point where a rule below either path applies, translated to the
 * other side, both sides must allow 'rename' and the target side may allow
 * nothing the source side did not (SFTPGo's checkRecursiveRenameDirPermissions
 * refuses such renames the same way).
 */
export function isDirectoryRenameAllowed(rules: PermissionRules, from: string, to: string): boolean {
  const suffixes = new Set<string>();
  for (const { dir } of rules) {
    for (const top of [from, to]) {
      if (isStrictlyBelow(dir, top)) suffixes.add(dir.slice(top === '/' ? 0 : top.length));
    }
  }
  for (const suffix of suffixes) {
    const source = allowedAt(rules, joinFtp(from, suffix));
    const target = allowedAt(rules, joinFtp(to, suffix));
    if (!source.has('rename') || !target.has('rename')) return false;
    for (const permission of target) if (!source.has(permission)) return false;
  }
  return true;
}

function allowedAt(rules: PermissionRules, ftpPath: string): ReadonlySet<Permission> {
  return new Set(PERMISSIONS.filter((p) => isAllowed(rules, ftpPath, p)));
}

function isStrictlyBelow(dir: string, top: string): boolean {
  return top === '/' ? dir !== '/' : dir.startsWith(`${top}/`);
}

/** `suffix` starts with '/'. */
function joinFtp(top: string, suffix: string): string {
  return top === '/' ? suffix : `${top}${suffix}`;
}
