import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, existsSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import { parse as parseYaml } from 'yaml';
import { loadConfig } from '../src/config/index.js';
import { RawFtp } from './helpers/ftp.js';
import { getS3 } from './helpers/minio.js';
import { childEnv, launchEnv, MAIN, nodeFlags, s3Settings, startServerProcess } from './helpers/process.js';
import { tempDir } from './helpers/server.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** npm installs from the registry (or its cache); generous, but bounded. */
const INSTALL_TIMEOUT_MS = 240_000;

interface Instruction {
  keyword: string;
  args: string;
  /** Index of the build stage (FROM) the instruction belongs to. */
  stage: number;
}

/** The Dockerfile as instructions, continuation lines joined and comments dropped. */
function dockerfile(): Instruction[] {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  const instructions: Instruction[] = [];
  let stage = -1;
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const [, keyword, args] = /^(\w+)\s+(.*)$/.exec(trimmed) ?? [];
    assert.ok(keyword && args !== undefined, `unparsable Dockerfile line: ${trimmed}`);
    if (keyword.toUpperCase() === 'FROM') stage++;
    instructions.push({ keyword: keyword.toUpperCase(), args: args.replace(/\s+/g, ' ').trim(), stage });
  }
  return instructions;
}

/** ENV key=value pairs (space-separated, values unquoted). */
function envOf(instructions: Instruction[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const i of instructions.filter((i) => i.keyword === 'ENV')) {
    for (const pair of i.args.split(' ')) {
      const at = pair.indexOf('=');
      if (at > 0) env[pair.slice(0, at)] = pair.slice(at + 1);
    }
  }
  return env;
}

/** An exec-form (JSON array) instruction's argv. */
function execForm(args: string): string[] {
  const argv = JSON.parse(args) as unknown;
  assert.ok(Array.isArray(argv) && argv.every((a) => typeof a === 'string'), `not exec form: ${args}`);
  return argv as string[];
}

function run(command: string, args: string[], options: { cwd: string; timeout: number; env?: NodeJS.ProcessEnv }): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { ...options, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

/** Resolves true once nothing accepts on the port (connection refused). */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(false)));
    socket.once('error', () => resolve(true));
  });
}

/** npm's path beside this node (the test may run under a node whose PATH has no npm). */
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

describe('Dockerfile', () => {
  const instructions = dockerfile();
  const last = Math.max(...instructions.map((i) => i.stage));
  const runtime = instructions.filter((i) => i.stage === last);

  test('builds in two stages; the runtime stage has production dependencies and dist/src only', () => {
    const froms = instructions.filter((i) => i.keyword === 'FROM');
    assert.ok(froms.length >= 2, 'multi-stage');
    assert.match(froms[0]!.args, / AS build$/i);
    const args = Object.fromEntries(
      instructions.filter((i) => i.keyword === 'ARG' && i.stage === -1).map((i) => i.args.split('=') as [string, string]),
    );
    const base = froms[last]!.args.split(' ')[0]!.replace(/^\$\{(\w+)\}$/, (_, name: string) => args[name] ?? name);
    assert.match(base, /^node:24-(bookworm-slim|alpine)/, 'Node 24 LTS');
    const runs = runtime.filter((i) => i.keyword === 'RUN').map((i) => i.args);
    assert.ok(runs.some((r) => /^npm ci --omit=dev\b/.test(r)), 'production dependencies from the lockfile');
    const copies = runtime.filter((i) => i.keyword === 'COPY').map((i) => i.args);
    assert.ok(copies.includes('--from=build /app/dist/src ./dist/src'));
    assert.ok(!copies.some((c) => /^\. /.test(c) || c.includes('node_modules')), 'no build context or node_modules copied whole');
    // The build stage compiles.
    assert.ok(instructions.some((i) => i.stage === 0 && i.keyword === 'RUN' && i.args.includes('tsc')));
  });

  test('runs as a non-root user, with a HEALTHCHECK on /healthz and the image defaults a valid configuration', () => {
    const users = runtime.filter((i) => i.keyword === 'USER');
    assert.ok(users.length > 0 && !['root', '0'].includes(users.at(-1)!.args), 'USER is not root');
    const entry = runtime.findIndex((i) => i.keyword === 'ENTRYPOINT');
    assert.ok(runtime.findIndex((i) => i.keyword === 'USER') < entry, 'USER before ENTRYPOINT');
    const health = runtime.find((i) => i.keyword === 'HEALTHCHECK');
    assert.ok(health && /CMD \[/.test(health.args) && health.args.includes('/healthz'));
    const env = envOf(runtime);
    assert.equal(env.FTP_HOST, '0.0.0.0');
    const config = loadConfig(env);
    const exposed = runtime.filter((i) => i.keyword === 'EXPOSE').flatMap((i) => i.args.split(' '));
    assert.ok(exposed.includes(String(config.port)), 'control port exposed');
    assert.ok(config.pasvPorts && exposed.includes(`${config.pasvPorts.min}-${config.pasvPorts.max}`), 'passive range exposed');
    assert.ok(config.health && exposed.includes(String(config.health.port)), 'health port exposed');
  });

  test('runs node with the flags of the bin and of npm start, and the environment of npm start', () => {
    // Linux before 5.1 cuts a shebang line at 127 bytes (BINPRM_BUF_SIZE 128).
    assert.ok(readFileSync(MAIN, 'utf8').split('\n', 1)[0]!.length <= 127, 'the shebang fits in 127 bytes');
    const argv = execForm(runtime.find((i) => i.keyword === 'ENTRYPOINT')!.args);
    assert.deepEqual(argv.slice(0, -1), ['node', ...nodeFlags()]);
    const env = envOf(runtime);
    assert.ok(Object.keys(launchEnv()).length > 0, 'npm start sets GLIBC_TUNABLES');
    for (const [name, value] of Object.entries(launchEnv())) assert.equal(env[name], value, name);
    const start = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts.start!;
    // `exec`: sh -c would otherwise stay as node's parent, and npm forwards a SIGTERM to sh only.
    const assignments = Object.entries(launchEnv()).map(([name, value]) => `${name}=${value}`);
    assert.equal(start, ['exec', 'env', ...assignments, 'node', ...nodeFlags(), 'dist/src/main.js'].join(' '));
  });

  test('.dockerignore keeps everything out of the context except what the build copies', () => {
    const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    assert.equal(ignore[0], '*');
    const allowed = ignore.filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/$/, ''));
    const sources = instructions
      .filter((i) => i.keyword === 'COPY' && !i.args.startsWith('--from'))
      .flatMap((i) => i.args.split(' ').slice(0, -1));
    for (const source of sources) assert.ok(allowed.includes(source), `${source} is in the build context`);
  });
});

/**
 * The Compose Specification's JSON schema (compose-spec/compose-spec,
 * schema/compose-spec.json, Apache-2.0), as the dclint package (MIT) ships it:
 * the schema `docker compose config` checks a file against, without building
 * or installing Docker Compose.
 */
function composeSchema(): Record<string, unknown> {
  const dclint = dirname(createRequire(import.meta.url).resolve('dclint/package.json'));
  const schema = JSON.parse(readFileSync(join(dclint, 'schemas', 'compose.schema.json'), 'utf8')) as Record<string, unknown>;
  // It names its draft as https://json-schema.org/draft-07/schema, which Ajv knows
  // only by its http:// id; Ajv's default draft is 07 anyway.
  delete schema.$schema;
  return schema;
}

/** A validator for compose files: the errors, one line each, or [] for a valid file. */
function composeValidator(): (document: unknown) => string[] {
  // strict: false, because the schema uses annotations Ajv does not know (`deprecated`).
  const validate = new Ajv({ allErrors: true, strict: false }).compile(composeSchema());
  return (document) => (validate(document) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''} ${JSON.stringify(e.params)}`));
}

describe('docker-compose.yml', () => {
  const compose = parseYaml(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8')) as {
    services: Record<string, { image?: string; build?: unknown; environment?: Record<string, string>; ports?: string[]; depends_on?: Record<string, { condition: string }>; command?: string[]; volumes?: string[] }>;
    volumes?: Record<string, unknown>;
  };

  test('is valid against the Compose Specification schema, with known references and port mappings', (t) => {
    const validate = composeValidator();
    assert.deepEqual(validate(compose), []);
    // The schema does reject what `docker compose config` rejects.
    const broken = structuredClone(compose) as { services: Record<string, Record<string, unknown>> };
    broken.services.s3ftp!.stop_grace_period = { seconds: 40 };
    broken.services.minio!.healthcheck = { ...(broken.services.minio!.healthcheck as object), retry: 12 };
    broken.services['create-bucket']!.depends_on = 'minio';
    const faults = new Set(validate(broken).map((e) => e.split(' ')[0]));
    assert.deepEqual([...faults].sort(), ['/services/create-bucket/depends_on', '/services/minio/healthcheck', '/services/s3ftp/stop_grace_period']);

    // What the schema cannot express: references between services and volumes.
    const names = Object.keys(compose.services);
    assert.deepEqual(names.sort(), ['create-bucket', 'minio', 's3ftp']);
    for (const [name, service] of Object.entries(compose.services)) {
      assert.ok(service.image || service.build, `${name} has an image or a build`);
      for (const dependency of Object.keys(service.depends_on ?? {})) assert.ok(names.includes(dependency), `${name} depends on ${dependency}`);
      for (const port of service.ports ?? []) assert.match(port, /^(127\.0\.0\.1:)?\d+(-\d+)?:\d+(-\d+)?$/, `${name} port ${port}`);
      for (const volume of service.volumes ?? []) {
        const source = volume.split(':')[0]!;
        if (!source.startsWith('.') && !source.startsWith('/')) assert.ok(source in (compose.volumes ?? {}), `volume ${source} declared`);
      }
    }
    // Where the Docker Compose plugin is installed, it has the last word too.
    if (spawnSync('docker', ['compose', 'version'], { timeout: 10_000 }).status === 0) {
      const checked = spawnSync('docker', ['compose', '-f', join(ROOT, 'docker-compose.yml'), 'config', '-q'], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(checked.status, 0, checked.stderr);
      t.diagnostic('also validated with docker compose config');
    }
  });

  test('runs MinIO, creates the bucket once, then s3ftp built from the Dockerfile, reachable from the host', () => {
    const { minio, 'create-bucket': create, s3ftp } = compose.services;
    assert.equal(create?.depends_on?.minio?.condition, 'service_healthy');
    assert.equal(s3ftp?.depends_on?.['create-bucket']?.condition, 'service_completed_successfully');
    assert.ok(s3ftp?.build === '.' || (s3ftp?.build as { context?: string })?.context === '.', 'built from the Dockerfile');
    const env = s3ftp!.environment!;
    const config = loadConfig(env);
    assert.equal(config.host, '0.0.0.0');
    assert.equal(config.pasvAddress, '127.0.0.1', 'PASV names the host loopback, not the container');
    const published = (s3ftp!.ports ?? []).map((p) => p.split(':'));
    // Published on the host as inside the container: PASV replies name the container's port numbers.
    assert.ok(published.some(([, host, inside]) => host === String(config.port) && inside === String(config.port)), 'control port');
    const range = `${config.pasvPorts!.min}-${config.pasvPorts!.max}`;
    assert.ok(published.some(([, host, inside]) => host === range && inside === range), 'passive range');
    // The bucket s3ftp serves is the one the one-shot step makes, on the MinIO service.
    assert.equal(config.storage.kind, 's3');
    assert.match(create!.command!.join(' '), new RegExp(`mc mb --ignore-existing local/${env.S3_BUCKET}$`));
    assert.equal(new URL(env.S3_ENDPOINT!).hostname, 'minio');
    assert.ok(minio?.ports?.some((p) => p.endsWith(':9000')));
    assert.equal(env.AWS_ACCESS_KEY_ID, minio!.environment!.MINIO_ROOT_USER);
  });
});

describe('the image entry point, run from a production install', { timeout: INSTALL_TIMEOUT_MS * 2 }, () => {
  const instructions = dockerfile();
  const last = Math.max(...instructions.map((i) => i.stage));
  const runtime = instructions.filter((i) => i.stage === last);

  test('the runtime stage, step by step: npm ci --omit=dev, dist/src, ENTRYPOINT + CMD, HEALTHCHECK', async (t) => {
    // The stage's steps, done in a temp dir that stands for /app.
    const app = tempDir('s3ftp-image-');
    for (const file of ['package.json', 'package-lock.json']) cpSync(join(ROOT, file), join(app, file));
    const install = runtime.find((i) => i.keyword === 'RUN' && i.args.startsWith('npm ci'))!.args.split(' && ')[0]!.split(' ');
    const installed = await run(NPM, [...install.slice(1), '--prefer-offline'], { cwd: app, timeout: INSTALL_TIMEOUT_MS });
    if (installed.code !== 0) {
      if (process.env.CI) assert.fail(`npm ci failed: ${installed.stderr}`);
      return t.skip(`npm ci failed (no registry?): ${installed.stderr.split('\n')[0]}`);
    }
    cpSync(join(ROOT, 'dist', 'src'), join(app, 'dist', 'src'), { recursive: true });
    const modules = readdirSync(join(app, 'node_modules'));
    for (const dev of ['typescript', 'basic-ftp', 'aws-cdk-lib', 'yaml']) assert.ok(!modules.includes(dev), `${dev} is a dev dependency`);
    assert.ok(!existsSync(join(app, 'src')), 'no TypeScript sources');

    const argv = [...execForm(runtime.find((i) => i.keyword === 'ENTRYPOINT')!.args), ...execForm(runtime.find((i) => i.keyword === 'CMD')!.args)];
    assert.equal(argv[0], 'node');
    // The image's environment, but on loopback and free ports (this is not a container).
    const env = childEnv({
      ...envOf(runtime),
      FTP_HOST: '127.0.0.1',
      FTP_PORT: '0',
      FTP_PASV_PORTS: '',
      HEALTH_HOST: '127.0.0.1',
      HEALTH_PORT: '0',
      DATA_DIR: join(app, 'data'),
      FTP_USER: 'image',
      FTP_PASSWORD: 'image-password',
    });
    const server = await startServerProcess(env, { command: process.execPath, args: argv.slice(1), cwd: app });
    try {
      const ftp = await RawFtp.connect(server.port);
      await ftp.expect('USER image', 331);
      await ftp.expect('PASS image-password', 230);
      await ftp.expect('MKD from-the-image', 257);
      ftp.close();
      assert.ok(existsSync(join(app, 'data', 'from-the-image')));
      // The HEALTHCHECK command itself, as Docker would run it inside the container.
      const health = execForm(runtime.find((i) => i.keyword === 'HEALTHCHECK')!.args.replace(/^.*?CMD /, ''));
      const probe = await run(process.execPath, health.slice(1), { cwd: app, timeout: 15_000, env: { ...env, HEALTH_PORT: String(server.healthPort) } });
      assert.equal(probe.code, 0, probe.stderr);
      const down = await run(process.execPath, health.slice(1), { cwd: app, timeout: 15_000, env: { ...env, HEALTH_PORT: '9' } });
      assert.equal(down.code, 1, 'the probe fails when nothing answers');
    } finally {
      assert.equal(await server.stop(), 0);
    }

    // check-config through the same entry point, against the test MinIO.
    const s3 = await getS3();
    if (s3) {
      const checked = await run(process.execPath, [...argv.slice(1, -1), 'check-config'], { cwd: app, timeout: 30_000, env: childEnv(s3Settings(s3, 'image')) });
      assert.equal(checked.code, 0, checked.stderr);
      assert.match(checked.stdout, /^storage: ok/m);
    }
  });

  test('npm pack from a clean tree (no dist): prepack builds; the tarball\'s bin works, its library starts nothing and has types', async (t) => {
    // The tracked files the package build needs, without dist/, and the installed node_modules.
    const clean = tempDir('s3ftp-clean-');
    for (const file of ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'README.md', 'src', 'scripts']) {
      cpSync(join(ROOT, file), join(clean, file), { recursive: true });
    }
    symlinkSync(join(ROOT, 'node_modules'), join(clean, 'node_modules'), 'dir');
    const work = tempDir('s3ftp-pack-');
    const packed = await run(NPM, ['pack', '--pack-destination', work, '--silent'], { cwd: clean, timeout: 120_000 });
    assert.equal(packed.code, 0, packed.stderr);
    const tarball = join(work, packed.stdout.trim().split('\n').at(-1)!);
    const files = await run('tar', ['-tzf', tarball], { cwd: work, timeout: 30_000 });
    const shipped = files.stdout.trim().split('\n');
    for (const file of ['dist/src/main.js', 'dist/src/index.js', 'dist/src/index.d.ts', 'package.json', 'README.md']) {
      assert.ok(shipped.includes(`package/${file}`), file);
    }
    // Only the compiled server and library and the README: no tests, sources, infra, maps or build state.
    const extra = shipped.filter((f) => !/^package\/dist\/src\/.*\.(js|d\.ts)$/.test(f) && !['package/package.json', 'package/README.md'].includes(f));
    assert.deepEqual(extra, []);

    const installed = await run(NPM, ['install', '--omit=dev', '--no-audit', '--no-fund', '--prefer-offline', tarball], { cwd: work, timeout: INSTALL_TIMEOUT_MS });
    if (installed.code !== 0) {
      if (process.env.CI) assert.fail(`npm install failed: ${installed.stderr}`);
      return t.skip(`npm install failed (no registry?): ${installed.stderr.split('\n')[0]}`);
    }
    const modules = readdirSync(join(work, 'node_modules'));
    for (const dev of ['typescript', 'aws-cdk-lib', 'ajv']) assert.ok(!modules.includes(dev), `${dev} is not installed with the package`);
    const bin = join(work, 'node_modules', '.bin', 's3ftp');
    const help = await run(bin, ['--help'], { cwd: work, timeout: 30_000, env: childEnv({}) });
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /^Usage: s3ftp/);
    const checked = await run(bin, ['check-config'], { cwd: work, timeout: 30_000, env: childEnv({ DATA_DIR: join(work, 'data') }) });
    assert.equal(checked.code, 0, checked.stderr);

    // The package name resolves to the library, which starts nothing: node ends by itself.
    const imported = await run(process.execPath, ['--input-type=module', '-e', "const m = await import('s3ftp'); process.stdout.write(typeof m.createServer)"], {
      cwd: work,
      timeout: 30_000,
      env: childEnv({}),
    });
    assert.equal(imported.code, 0, imported.stderr);
    assert.equal(imported.stdout, 'function');
    // And a TypeScript consumer type-checks against the shipped declarations.
    writeFileSync(
      join(work, 'consumer.mts'),
      "import { createServer, loadConfig, type Config, type S3FtpServer } from 's3ftp';\n" +
        'const config: Config = loadConfig({ FTP_PORT: "0" });\n' +
        'export const start: (c: Config) => Promise<S3FtpServer> = createServer;\n' +
        'export const port: number = config.port;\n',
    );
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const typeRoots = join(ROOT, 'node_modules', '@types');
    const typed = await run(
      process.execPath,
      [tsc, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--skipLibCheck', '--types', 'node', '--typeRoots', typeRoots, 'consumer.mts'],
      { cwd: work, timeout: 60_000 },
    );
    assert.equal(typed.code, 0, typed.stdout + typed.stderr);
  });
});

// Its own suite: the suite above already spends up to two npm installs of its time bound.
describe('a git install', { timeout: INSTALL_TIMEOUT_MS * 2 }, () => {
  test('npm install of a git URL: prepare builds with declarations; the bin and the library work', async (t) => {
    // A repository of the package's tracked build inputs, as a git URL would give them.
    const repo = tempDir('s3ftp-git-');
    for (const file of ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'README.md', 'src', 'scripts']) {
      cpSync(join(ROOT, file), join(repo, file), { recursive: true });
    }
    const git = (...args: string[]) => run('git', ['-c', 'user.name=s3ftp test', '-c', 'user.email=test@example.invalid', ...args], { cwd: repo, timeout: 60_000 });
    for (const args of [['init', '-q'], ['add', '-A'], ['commit', '-q', '-m', 'package']]) assert.equal((await git(...args)).code, 0, args.join(' '));
    const work = tempDir('s3ftp-gitinstall-');
    writeFileSync(join(work, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
    const installed = await run(NPM, ['install', '--no-audit', '--no-fund', '--prefer-offline', `git+file://${repo}`], { cwd: work, timeout: INSTALL_TIMEOUT_MS });
    if (installed.code !== 0) {
      if (process.env.CI) assert.fail(`npm install failed: ${installed.stderr}`);
      return t.skip(`npm install failed (no registry?): ${installed.stderr.split('\n')[0]}`);
    }
    const pkg = join(work, 'node_modules', 's3ftp');
    for (const file of ['dist/src/main.js', 'dist/src/index.js', 'dist/src/index.d.ts']) assert.ok(existsSync(join(pkg, file)), file);
    const version = await run(join(work, 'node_modules', '.bin', 's3ftp'), ['--version'], { cwd: work, timeout: 30_000, env: childEnv({}) });
    assert.equal(version.code, 0, version.stderr);
    assert.match(version.stdout, /^s3ftp \d+\.\d+\.\d+/);
    const imported = await run(process.execPath, ['--input-type=module', '-e', "const m = await import('s3ftp'); process.stdout.write(typeof m.createServer)"], {
      cwd: work,
      timeout: 30_000,
      env: childEnv({}),
    });
    assert.equal(imported.code, 0, imported.stderr);
    assert.equal(imported.stdout, 'function');
  });
});

describe('npm start', () => {
  test('its fast build (scripts/build.mjs, no type check) emits what tsc emits, and only what changed', async () => {
    const copy = tempDir('s3ftp-fastbuild-');
    for (const file of ['package.json', 'tsconfig.json', 'tsconfig.build.json', 'src', 'scripts']) cpSync(join(ROOT, file), join(copy, file), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules'), join(copy, 'node_modules'), 'dir');
    const built = await run(process.execPath, ['scripts/build.mjs'], { cwd: copy, timeout: 120_000, env: { ...process.env, S3FTP_BUILD_VERBOSE: '1' } });
    assert.equal(built.code, 0, built.stderr);
    // ROOT/dist/src is tsc's (npm test's pretest), with the same options.
    const js = (dir: string) => (readdirSync(dir, { recursive: true }) as string[]).filter((f) => f.endsWith('.js')).sort();
    const files = js(join(copy, 'dist', 'src'));
    assert.deepEqual(files, js(join(ROOT, 'dist', 'src')));
    for (const file of files) assert.equal(readFileSync(join(copy, 'dist', 'src', file), 'utf8'), readFileSync(join(ROOT, 'dist', 'src', file), 'utf8'), file);
    const again = await run(process.execPath, ['scripts/build.mjs'], { cwd: copy, timeout: 60_000, env: { ...process.env, S3FTP_BUILD_VERBOSE: '1' } });
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stderr, '', 'nothing to do: it exits before loading the compiler');
  });

  test('runs the server as npm\'s own child, so a SIGTERM to the npm process stops it and frees the port', async () => {
    const data = tempDir('s3ftp-start-');
    const env = childEnv({ FTP_PORT: '0', DATA_DIR: data, FTP_USER: 'starter', FTP_PASSWORD: 'start-password' });
    const npm = await startServerProcess(env, { command: NPM, args: ['start', '--silent'], cwd: ROOT, timeoutMs: 120_000 });
    try {
      const ftp = await RawFtp.login(npm.port, 'starter', 'start-password');
      ftp.close();
      // The npm process itself, not the server: a process manager knows only that PID.
      const exited = once(npm.child, 'exit');
      npm.child.kill('SIGTERM');
      await exited;
      const deadline = Date.now() + 15_000;
      while (!(await refused(npm.port)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.ok(await refused(npm.port), `port ${npm.port} still accepts after npm exited: the server was orphaned`);
      assert.ok(npm.logs.some((l) => l.event === 'shutdown' && l.signal === 'SIGTERM'), 'the server shut down on the forwarded signal');
    } finally {
      await npm.stop();
    }
  });
});

