#!/usr/bin/env node
// Synthesises the s3ftp stack: `npm run synth` (writes cdk.out/), or through the
// CDK CLI with `npx cdk deploy --app 'node dist/infra/app.js'`.
import { App } from 'aws-cdk-lib';
import { envName, InfraConfigError, settingsFromLookup } from './settings.js';
import { S3FtpStack } from './stack.js';

// Under the CLI, CDK_OUTDIR names its output directory; run directly, write ./cdk.out.
const app = new App({ outdir: process.env.CDK_OUTDIR ?? 'cdk.out' });
try {
  // -c key=value (CLI) or cdk.json context first, then S3FTP_* environment variables.
  const settings = settingsFromLookup((key) => app.node.tryGetContext(key) ?? process.env[envName(key)]);
  // No env: the template deploys to any account and region, and synth needs no AWS access.
  new S3FtpStack(app, 'S3Ftp', { settings });
} catch (err) {
  if (!(err instanceof InfraConfigError)) throw err;
  process.stderr.write(`s3ftp infra: invalid setting: ${err.message}\n`);
  process.exit(2);
}
const assembly = app.synth();
if (!process.env.CDK_OUTDIR) process.stderr.write(`s3ftp infra: wrote ${assembly.directory}/S3Ftp.template.json\n`);
