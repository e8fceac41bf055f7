/**
 * The CDK app's assertion tests (infra/test/*.test.ts) run here, in this
 * process, so `npm test` reports them with the rest. infra/ is its own package
 * (the CDK is ~200 MB that the server never loads): its dependencies come from
 * `npm ci --prefix infra`, which `npm test` runs first (scripts/infra-deps.sh).
 * Without them the tests are skipped with a reason, except under CI.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

const INFRA = fileURLToPath(new URL('../../infra', import.meta.url));
/** Compiling against the CDK's typings takes a while on two cores. */
const BUILD_TIMEOUT_MS = 240_000;

function buildInfra(): Promise<string | undefined> {
  const tsc = join(INFRA, 'node_modules', 'typescript', 'bin', 'tsc');
  return new Promise((resolve) => {
    execFile(process.execPath, [tsc, '-b', join(INFRA, 'tsconfig.json')], { timeout: BUILD_TIMEOUT_MS, maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
      resolve(err ? `${err.message}\n${stdout}${stderr}` : undefined),
    );
  });
}

if (!existsSync(join(INFRA, 'node_modules', 'aws-cdk-lib'))) {
  test('infra assertion tests', (t) => {
    if (process.env.CI) assert.fail('infra/node_modules is missing: run `npm ci --prefix infra` (npm test does)');
    t.skip('infra dependencies are not installed (npm ci --prefix infra)');
  });
} else {
  const failed = await buildInfra();
  if (failed) {
    test('infra compiles', () => assert.fail(failed));
  } else {
    // The compiled form of each infra/test/*.test.ts; its top-level tests register with this file's runner.
    const sources = readdirSync(join(INFRA, 'test')).filter((f) => f.endsWith('.test.ts'));
    assert.ok(sources.length > 0, 'infra/test has tests');
    for (const source of sources) {
      await import(pathToFileURL(join(INFRA, 'dist', 'infra', 'test', source.replace(/\.ts$/, '.js'))).href);
    }
  }
}
