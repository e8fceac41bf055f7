#!/usr/bin/env node
// The fast build behind `npm start`, `npm run hash-password` and `prepare` (in a clone):
// compiles each src/**/*.ts whose output is missing or older, file by file
// (ts.transpileModule: no type check, no declarations), with the options of
// tsconfig.build.json. About a second instead of the 5-10 s a full tsc spends
// loading the AWS SDK's typings. Type errors are caught by `npm run build`,
// `npm run typecheck` and `npm test`, which run tsc itself; tsconfig.json sets
// isolatedModules, so tsc refuses what a file-by-file compile would get wrong.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, realpathSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

const mtime = (file) => {
  try {
    return statSync(file).mtimeMs;
  } catch {
    return -1;
  }
};

// As `prepare` of a git dependency (npm runs it in its own clone, not where it was started:
// INIT_CWD), the package is about to be packed for someone else: give it the type-checked
// build with declarations, as `prepack` gives a tarball.
if (process.argv.includes('--prepare') && process.env.INIT_CWD && realpathSync(process.env.INIT_CWD) !== realpathSync(root)) {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const result = spawnSync(process.execPath, [tsc, '-b', join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
  process.exit(result.status ?? 1);
}

// Up to date (the usual case): answer before loading the compiler, which alone takes a second.
// tsconfig.build.json compiles src/**/*.ts into dist/src.
const sources = readdirSync(join(root, 'src'), { recursive: true }).filter((f) => f.endsWith('.ts')).map((f) => join(root, 'src', f));
if (sources.every((source) => mtime(join(root, 'dist', relative(root, source)).replace(/\.ts$/, '.js')) >= mtime(source))) process.exit(0);

const { default: ts } = await import('typescript');
const configPath = join(root, 'tsconfig.build.json');
const parsed = ts.getParsedCommandLineOfConfigFile(configPath, {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: (d) => fail(d) });
if (!parsed) process.exit(1);
if (parsed.errors.length > 0) fail(parsed.errors[0]);
// package.json has "type": "module", so NodeNext emits ES modules; transpileModule cannot see
// package.json, so it is told ESNext, whose output for these files is the same.
const options = { ...parsed.options, module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler, declaration: false, incremental: false, tsBuildInfoFile: undefined };
const { outDir, rootDir } = options;

let compiled = 0;
for (const source of parsed.fileNames) {
  const out = join(outDir, relative(rootDir, source)).replace(/\.ts$/, '.js');
  if (mtime(out) >= mtime(source)) continue;
  const result = ts.transpileModule(readFileSync(source, 'utf8'), { compilerOptions: options, fileName: source, reportDiagnostics: true });
  if (result.diagnostics?.length) fail(result.diagnostics[0]);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, result.outputText);
  if (result.sourceMapText) writeFileSync(`${out}.map`, result.sourceMapText);
  compiled++;
}
if (process.env.S3FTP_BUILD_VERBOSE) process.stderr.write(`build: ${compiled} of ${parsed.fileNames.length} files compiled\n`);

function fail(diagnostic) {
  process.stderr.write(ts.formatDiagnostic(diagnostic, { getCanonicalFileName: (f) => f, getCurrentDirectory: () => root, getNewLine: () => '\n' }));
  process.exit(1);
}
