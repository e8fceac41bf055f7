import assert from 'node:assert/strict';
import { test } from 'node:test';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import {
  envName,
  InfraConfigError,
  resolveSettings,
  settingsFromLookup,
  type InfraSettings,
} from '../settings.js';
import { LOCKED_USERS_JSON, S3FtpStack, USERS_ENV } from '../stack.js';
import { parseUsersFile, verifyPassword } from '../../src/auth/users.js';
import { loadConfig } from '../../src/config/index.js';

// Each synthesis takes a few seconds, so each template is built once and shared.
type Resources = Record<string, { Type: string; Properties: Record<string, any>; DependsOn?: string[] }>;

function synth(settings: Partial<InfraSettings>): Template {
  return Template.fromStack(new S3FtpStack(new App(), 'S3Ftp', { settings }));
}

function resources(template: Template, type: string): Resources {
  return template.findResources(type) as Resources;
}

function only<T>(values: T[]): T {
  assert.equal(values.length, 1, 'expected exactly one');
  return values[0]!;
}

function containers(template: Template): Array<Record<string, any>> {
  return Object.values(resources(template, 'AWS::ECS::TaskDefinition')).map((t) => only(t.Properties.ContainerDefinitions as Array<Record<string, any>>));
}

function env(container: Record<string, any>): Record<string, unknown> {
  return Object.fromEntries((container.Environment as Array<{ Name: string; Value: unknown }>).map((e) => [e.Name, e.Value]));
}

function attributes(tg: { Properties: Record<string, any> }): Record<string, string> {
  return Object.fromEntries((tg.Properties.TargetGroupAttributes as Array<{ Key: string; Value: string }>).map((a) => [a.Key, a.Value]));
}

/** Every statement of every IAM policy attached to the role with this logical id. */
function roleStatements(template: Template, roleId: string): Array<Record<string, any>> {
  const policies = Object.values(resources(template, 'AWS::IAM::Policy')).filter((p) =>
    (p.Properties.Roles as unknown[]).some((r) => JSON.stringify(r) === JSON.stringify({ Ref: roleId })),
  );
  const role = resources(template, 'AWS::IAM::Role')[roleId];
  assert.ok(role, `role ${roleId}`);
  assert.equal(role.Properties.ManagedPolicyArns, undefined, 'no managed policies');
  assert.equal(role.Properties.Policies, undefined, 'no inline policies');
  return policies.flatMap((p) => p.Properties.PolicyDocument.Statement as Array<Record<string, any>>);
}

function logicalId(template: Template, type: string, match: (props: Record<string, any>) => boolean): string {
  return only(Object.entries(resources(template, type)).filter(([, r]) => match(r.Properties)).map(([id]) => id));
}

/** Listener port → the target group it forwards to. */
function listeners(template: Template): Map<number, string> {
  const map = new Map<number, string>();
  for (const l of Object.values(resources(template, 'AWS::ElasticLoadBalancingV2::Listener'))) {
    assert.equal(l.Properties.Protocol, 'TCP');
    map.set(l.Properties.Port, only(l.Properties.DefaultActions as Array<{ TargetGroupArn: { Ref: string } }>).TargetGroupArn.Ref);
  }
  return map;
}

const range = (first: number, last: number) => Array.from({ length: last - first + 1 }, (_, i) => first + i);

const defaults = synth({});
const custom = synth({
  versioning: true,
  prefix: '/drops/in/',
  proxyProtocol: true,
  tasks: 3,
  portsPerTask: 3,
  passivePortStart: 40000,
  image: '123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/s3ftp:1.2.3',
  usersSecretArn: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:s3ftp/users-AbCdEf',
});
const existing = synth({ bucketName: 'existing-bucket', tasks: 1 });

test('the bucket: SSE, public access blocked, TLS only, stale multipart uploads aborted after a day', () => {
  const bucket = only(Object.values(resources(defaults, 'AWS::S3::Bucket')));
  assert.deepEqual(bucket.Properties.BucketEncryption, {
    ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
  });
  assert.deepEqual(bucket.Properties.PublicAccessBlockConfiguration, {
    BlockPublicAcls: true,
    BlockPublicPolicy: true,
    IgnorePublicAcls: true,
    RestrictPublicBuckets: true,
  });
  assert.deepEqual(bucket.Properties.LifecycleConfiguration.Rules, [
    { Id: 'abort-incomplete-multipart-uploads', AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 }, Status: 'Enabled' },
  ]);
  const policy = only(Object.values(resources(defaults, 'AWS::S3::BucketPolicy')));
  const deny = only((policy.Properties.PolicyDocument.Statement as Array<Record<string, any>>).filter((s) => s.Effect === 'Deny'));
  assert.deepEqual(deny.Condition, { Bool: { 'aws:SecureTransport': 'false' } });
  assert.equal(deny.Action, 's3:*');
  assert.deepEqual(deny.Principal, { AWS: '*' });
  assert.equal(deny.Resource.length, 2, 'the bucket and its objects');
});

test('versioning is off by default and on with the flag; an existing bucket is used as it is', () => {
  assert.equal(only(Object.values(resources(defaults, 'AWS::S3::Bucket'))).Properties.VersioningConfiguration, undefined);
  assert.deepEqual(only(Object.values(resources(custom, 'AWS::S3::Bucket'))).Properties.VersioningConfiguration, { Status: 'Enabled' });
  existing.resourceCountIs('AWS::S3::Bucket', 0);
  existing.resourceCountIs('AWS::S3::BucketPolicy', 0);
  assert.equal(env(only(containers(existing))).S3_BUCKET, 'existing-bucket');
});

test('one Fargate service of one task per slot, never two tasks on the same passive ports', () => {
  for (const [template, count] of [[defaults, 2], [custom, 3], [existing, 1]] as const) {
    const services = Object.entries(resources(template, 'AWS::ECS::Service'));
    assert.equal(services.length, count);
    for (const [, s] of services) {
      assert.equal(s.Properties.LaunchType, 'FARGATE');
      assert.equal(s.Properties.DesiredCount, 1);
      assert.equal(s.Properties.DeploymentConfiguration.MaximumPercent, 100);
      assert.equal(s.Properties.DeploymentConfiguration.MinimumHealthyPercent, 0);
      assert.equal(s.Properties.NetworkConfiguration.AwsvpcConfiguration.AssignPublicIp, 'DISABLED');
    }
    // All slots run as the same two roles.
    const roles = Object.values(resources(template, 'AWS::ECS::TaskDefinition')).map((t) => JSON.stringify([t.Properties.TaskRoleArn, t.Properties.ExecutionRoleArn]));
    assert.equal(new Set(roles).size, 1);
    // Slots are replaced one after the other.
    const ids = services.map(([id]) => id);
    for (let i = 1; i < ids.length; i++) assert.ok(services[i]![1].DependsOn?.includes(ids[i - 1]!), `${ids[i]} waits for ${ids[i - 1]}`);
  }
});

test('the container: image with its own entry point, environment, awslogs, read-only root', () => {
  const all = containers(defaults);
  assert.deepEqual(all.map((c) => env(c).FTP_PASV_PORTS).sort(), ['30000-30003', '30004-30007']);
  const group = logicalId(defaults, 'AWS::Logs::LogGroup', () => true);
  assert.equal(resources(defaults, 'AWS::Logs::LogGroup')[group]!.Properties.RetentionInDays, 30);
  for (const c of all) {
    assert.equal(c.Image, 'ghcr.io/example/s3ftp:latest');
    // The image's ENTRYPOINT and CMD run the server; nothing wraps it in a shell.
    assert.equal(c.EntryPoint, undefined);
    assert.equal(c.Command, undefined);
    const e = env(c);
    assert.equal(e.FTP_HOST, '0.0.0.0');
    assert.equal(e.FTP_PORT, '2121');
    assert.deepEqual(e.S3_BUCKET, { Ref: logicalId(defaults, 'AWS::S3::Bucket', () => true) });
    assert.deepEqual(e.S3_REGION, { Ref: 'AWS::Region' });
    assert.equal(e.S3_PREFIX, undefined);
    assert.equal(c.LogConfiguration.LogDriver, 'awslogs');
    assert.deepEqual(c.LogConfiguration.Options['awslogs-group'], { Ref: group });
    assert.equal(c.ReadonlyRootFilesystem, true);
    // Nothing is written at all: no scratch volume.
    assert.equal(c.MountPoints, undefined);
  }
  for (const t of Object.values(resources(defaults, 'AWS::ECS::TaskDefinition'))) assert.equal(t.Properties.Volumes, undefined);
  assert.equal(env(only(containers(custom).filter((c) => env(c).FTP_PASV_PORTS === '40000-40002'))).S3_PREFIX, 'drops/in');
});

test('the load balancer: a control listener and one per passive port, on static addresses', () => {
  for (const [template, passive] of [[defaults, range(30000, 30007)], [custom, range(40000, 40008)], [existing, range(30000, 30003)]] as const) {
    assert.deepEqual([...listeners(template).keys()].sort((a, b) => a - b), [21, ...passive]);
  }
  const nlb = only(Object.values(resources(defaults, 'AWS::ElasticLoadBalancingV2::LoadBalancer')));
  assert.equal(nlb.Properties.Type, 'network');
  assert.equal(nlb.Properties.Scheme, 'internet-facing');
  assert.ok(
    (nlb.Properties.LoadBalancerAttributes as Array<{ Key: string; Value: string }>).some(
      (a) => a.Key === 'load_balancing.cross_zone.enabled' && a.Value === 'true',
    ),
  );
  const mappings = nlb.Properties.SubnetMappings as Array<{ AllocationId: { 'Fn::GetAtt': [string, string] } }>;
  assert.equal(mappings.length, 2);
  const first = mappings[0]!.AllocationId['Fn::GetAtt'][0];
  assert.equal(resources(defaults, 'AWS::EC2::EIP')[first]!.Properties.Domain, 'vpc');
  // PASV names the first static address, known before any task starts.
  for (const c of containers(defaults)) assert.deepEqual(env(c).FTP_PASV_ADDRESS, { 'Fn::GetAtt': [first, 'PublicIp'] });
});

test('a passive port reaches only the task that owns it; the control port reaches every task', () => {
  for (const template of [defaults, custom]) {
    const byPort = listeners(template);
    const control = byPort.get(21)!;
    const groups = resources(template, 'AWS::ElasticLoadBalancingV2::TargetGroup');
    assert.equal(groups[control]!.Properties.Port, 2121);
    const services = Object.values(resources(template, 'AWS::ECS::Service'));
    const taskDefs = resources(template, 'AWS::ECS::TaskDefinition');
    for (const service of services) {
      const lbs = service.Properties.LoadBalancers as Array<{ ContainerPort: number; TargetGroupArn: { Ref: string } }>;
      assert.ok(lbs.length <= 5, 'ECS allows five target groups per service');
      assert.ok(lbs.some((lb) => lb.TargetGroupArn.Ref === control && lb.ContainerPort === 2121));
      const [first, last] = String(env(only(taskDefs[service.Properties.TaskDefinition.Ref]!.Properties.ContainerDefinitions)).FTP_PASV_PORTS)
        .split('-')
        .map(Number);
      const owned = lbs.filter((lb) => lb.TargetGroupArn.Ref !== control);
      assert.deepEqual(owned.map((lb) => lb.ContainerPort), range(first!, last!));
      for (const lb of owned) assert.equal(byPort.get(lb.ContainerPort), lb.TargetGroupArn.Ref, `listener ${lb.ContainerPort}`);
    }
    // No passive target group is shared between services.
    const passiveRefs = services.flatMap((s) => (s.Properties.LoadBalancers as Array<{ TargetGroupArn: { Ref: string } }>).map((lb) => lb.TargetGroupArn.Ref)).filter((r) => r !== control);
    assert.equal(new Set(passiveRefs).size, passiveRefs.length);
    assert.equal(passiveRefs.length, byPort.size - 1);
    for (const tg of Object.values(groups)) {
      assert.equal(tg.Properties.TargetType, 'ip');
      assert.equal(tg.Properties.HealthCheckPort, '2121');
      assert.equal(attributes(tg)['preserve_client_ip.enabled'], 'true');
    }
  }
});

test('PROXY protocol v2 is on the control target group only, and only when asked for', () => {
  for (const [template, expected] of [[defaults, 'false'], [custom, 'true']] as const) {
    const control = listeners(template).get(21)!;
    for (const [id, tg] of Object.entries(resources(template, 'AWS::ElasticLoadBalancingV2::TargetGroup'))) {
      assert.equal(attributes(tg)['proxy_protocol_v2.enabled'], id === control ? expected : 'false', id);
    }
  }
});

test('users come from Secrets Manager as FTP_USERS_JSON, which the server reads itself', async () => {
  const secret = logicalId(defaults, 'AWS::SecretsManager::Secret', () => true);
  assert.equal(USERS_ENV, 'FTP_USERS_JSON');
  for (const c of containers(defaults)) {
    assert.deepEqual(c.Secrets, [{ Name: USERS_ENV, ValueFrom: { Ref: secret } }]);
    // The secret only as a secret: never in the plain environment, and no users file beside it.
    assert.equal(env(c).FTP_USERS_JSON, undefined);
    assert.equal(env(c).FTP_USERS_FILE, undefined);
  }
  // The execution role reads the secret at task start; the server's own role does not.
  // Every slot's task definition shares the two roles.
  const taskDef = Object.values(resources(defaults, 'AWS::ECS::TaskDefinition'))[0]!.Properties;
  const read = roleStatements(defaults, taskDef.ExecutionRoleArn['Fn::GetAtt'][0]).filter((s) => JSON.stringify(s.Action).includes('secretsmanager:'));
  assert.deepEqual(only(read).Resource, { Ref: secret });
  // The server's role may read the secret's value, nothing more, and is told its ARN to re-read it without a restart.
  const reread = roleStatements(defaults, taskDef.TaskRoleArn['Fn::GetAtt'][0]).filter((s) => JSON.stringify(s.Action).includes('secretsmanager:'));
  assert.deepEqual(only(reread).Action, 'secretsmanager:GetSecretValue');
  assert.deepEqual(only(reread).Resource, { Ref: secret });
  for (const c of containers(defaults)) assert.deepEqual(env(c).FTP_USERS_SECRET_ID, { Ref: secret });
  // The created secret's first value is a users file the server accepts, with no usable password.
  const stored = only(Object.values(resources(defaults, 'AWS::SecretsManager::Secret'))).Properties.SecretString;
  assert.equal(stored, LOCKED_USERS_JSON);
  const [nobody] = parseUsersFile(LOCKED_USERS_JSON);
  for (const guess of ['', 'nobody', 'password']) assert.equal(await verifyPassword(nobody!.password, guess), false);
  // The server accepts it as ECS starts it: the task's environment (its deploy-time values filled in) plus the secret.
  const secretArn = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:s3ftp/users-AbCdEf';
  const taskEnv = { ...env(containers(defaults)[0]!), S3_BUCKET: 'bucket', S3_REGION: 'eu-west-1', FTP_PASV_ADDRESS: '203.0.113.10', FTP_USERS_SECRET_ID: secretArn };
  assert.ok(Object.values(taskEnv).every((v) => typeof v === 'string'), JSON.stringify(taskEnv));
  const config = loadConfig({ ...(taskEnv as Record<string, string>), [USERS_ENV]: stored });
  assert.deepEqual(config.users.map((u) => u.name), ['nobody']);
  assert.equal(config.usersFile?.secretId, secretArn);
  // An existing secret is referenced by its complete ARN, and nothing is created.
  custom.resourceCountIs('AWS::SecretsManager::Secret', 0);
  for (const c of containers(custom)) {
    assert.deepEqual(c.Secrets, [{ Name: USERS_ENV, ValueFrom: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:s3ftp/users-AbCdEf' }]);
  }
});

test('the task role may use only the S3 driver’s actions, under the prefix', () => {
  const cases = [
    { template: defaults, bucketArn: 'bucket', objects: '/*', condition: undefined },
    { template: custom, bucketArn: 'bucket', objects: '/drops/in/*', condition: { StringLike: { 's3:prefix': ['drops/in/*'] } } },
    { template: existing, bucketArn: 'existing', objects: '/*', condition: undefined },
  ];
  for (const { template, bucketArn, objects, condition } of cases) {
    const taskDef = Object.values(resources(template, 'AWS::ECS::TaskDefinition'))[0]!.Properties;
    // Besides the users secret's value (tested with the secret).
    const statements = roleStatements(template, taskDef.TaskRoleArn['Fn::GetAtt'][0]).filter((s) => s.Sid !== 'ReadUsersSecret');
    assert.ok(statements.every((s) => s.Effect === 'Allow' && s.NotAction === undefined && s.NotResource === undefined));
    const actions = statements.flatMap((s) => [s.Action].flat() as string[]);
    assert.deepEqual(
      actions.sort(),
      [
        's3:AbortMultipartUpload',
        's3:DeleteObject',
        's3:GetObject',
        's3:GetObjectTagging',
        's3:ListBucket',
        's3:ListBucketMultipartUploads',
        's3:ListMultipartUploadParts',
        's3:PutObject',
        's3:PutObjectTagging',
      ],
    );
    assert.ok(actions.every((a) => !a.includes('*')), 'no wildcard actions');
    const list = only(statements.filter((s) => s.Action === 's3:ListBucket'));
    assert.deepEqual(list.Condition, condition);
    // The sweep lists multipart uploads without a prefix, so that right has no condition.
    const sweep = only(statements.filter((s) => s.Action === 's3:ListBucketMultipartUploads'));
    assert.equal(sweep.Condition, undefined);
    assert.deepEqual(sweep.Resource, list.Resource);
    const objectStatement = only(statements.filter((s) => s.Action !== 's3:ListBucket' && s.Sid !== 'SweepMultipartUploads'));
    const bucketResource = JSON.stringify(list.Resource);
    const objectResource = JSON.stringify(objectStatement.Resource);
    if (bucketArn === 'existing') {
      assert.match(bucketResource, /:s3:::existing-bucket"/);
      assert.match(objectResource, /:s3:::existing-bucket\/\*"/);
    } else {
      const bucket = logicalId(template, 'AWS::S3::Bucket', () => true);
      assert.deepEqual(list.Resource, { 'Fn::GetAtt': [bucket, 'Arn'] });
      assert.deepEqual(objectStatement.Resource, { 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucket, 'Arn'] }, objects]] });
    }
  }
});

test('extra buckets: named to the server in S3_EXTRA_BUCKETS, and the task role gets the same actions on each', () => {
  const template = synth({ extraBuckets: ['drops', 'exports'] });
  assert.equal(env(containers(template)[0]!).S3_EXTRA_BUCKETS, 'drops,exports');
  assert.equal(env(containers(defaults)[0]!).S3_EXTRA_BUCKETS, undefined);
  const taskDef = Object.values(resources(template, 'AWS::ECS::TaskDefinition'))[0]!.Properties;
  const statements = roleStatements(template, taskDef.TaskRoleArn['Fn::GetAtt'][0]);
  const list = only(statements.filter((st) => st.Sid === 'ListExtraBuckets'));
  const objects = only(statements.filter((st) => st.Sid === 'ObjectsInExtraBuckets'));
  assert.match(JSON.stringify(list.Resource), /:s3:::drops".*:s3:::exports"/);
  assert.match(JSON.stringify(objects.Resource), /:s3:::drops\/\*".*:s3:::exports\/\*"/);
  const base = only(statements.filter((st) => st.Sid === 'ObjectsUnderPrefix'));
  assert.deepEqual([objects.Action].flat().sort(), [base.Action].flat().sort());
  assert.throws(() => resolveSettings({ extraBuckets: ['Bad_Name'] }), /extraBuckets: "Bad_Name" is not a valid bucket name/);
  assert.throws(() => resolveSettings({ bucketName: 'same', extraBuckets: ['same'] }), /is the served bucket itself/);
});

test('an ECR image gets pull rights on the execution role; other registries get none', () => {
  const executionActions = (template: Template) => {
    const taskDef = Object.values(resources(template, 'AWS::ECS::TaskDefinition'))[0]!.Properties;
    return roleStatements(template, taskDef.ExecutionRoleArn['Fn::GetAtt'][0]).flatMap((s) => [s.Action].flat() as string[]);
  };
  assert.ok(executionActions(custom).includes('ecr:BatchGetImage'));
  assert.ok(!executionActions(defaults).some((a) => a.startsWith('ecr:')));
  assert.equal(containers(custom)[0]!.Image, '123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/s3ftp:1.2.3');
});

test('settings that would break a deployment fail at synth time, naming the setting', () => {
  const cases: Array<[Partial<InfraSettings>, RegExp]> = [
    [{ tasks: 13, portsPerTask: 4 }, /^tasks × portsPerTask: 13 × 4 = 52 passive listeners .* 50 listeners/],
    [{ tasks: 50, portsPerTask: 1 }, /^tasks: 50 is outside 1-49/],
    [{ portsPerTask: 16 }, /^portsPerTask: 16 is more than 4: an ECS service registers with at most 5 target groups/],
    [{ portsPerTask: 0 }, /^portsPerTask:/],
    [{ tasks: 0 }, /^tasks:/],
    [{ passivePortStart: 80 }, /^passivePortStart:/],
    [{ passivePortStart: 65530, tasks: 2, portsPerTask: 4 }, /^passivePortStart: .* past 65535/],
    [{ passivePortStart: 2120 }, /^passivePortStart: .* control port 2121/],
    [{ bucketName: 'Bad_Bucket' }, /^bucketName:/],
    [{ bucketName: 'existing-bucket', versioning: true }, /^versioning:/],
    [{ prefix: 'a/*' }, /^prefix:/],
    [{ usersSecretArn: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:s3ftp/users' }, /^usersSecretArn: .* complete/],
    [{ clientCidr: '10.0.0.0/33' }, /^clientCidr:/],
    [{ image: 'has space' }, /^image:/],
  ];
  for (const [settings, message] of cases) {
    assert.throws(() => resolveSettings(settings), (err: unknown) => err instanceof InfraConfigError && message.test(err.message), JSON.stringify(settings));
  }
  // The stack checks before it builds anything.
  assert.throws(() => new S3FtpStack(new App(), 'S3Ftp', { settings: { tasks: 25, portsPerTask: 2 } }), InfraConfigError);
  // The boundary: 49 passive listeners and the control listener.
  assert.equal(resolveSettings({ tasks: 49, portsPerTask: 1 }).tasks, 49);
});

test('settings come from context or S3FTP_* variables, as strings, normalised like the server', () => {
  assert.equal(envName('portsPerTask'), 'S3FTP_PORTS_PER_TASK');
  assert.equal(envName('usersSecretArn'), 'S3FTP_USERS_SECRET_ARN');
  const values: Record<string, unknown> = { tasks: '3', portsPerTask: 2, versioning: 'yes', proxyProtocol: false, prefix: '//a/./b/', image: ' x/y:1 ', bucketName: '' };
  const s = settingsFromLookup((key) => values[key]);
  assert.deepEqual(
    { tasks: s.tasks, portsPerTask: s.portsPerTask, versioning: s.versioning, proxyProtocol: s.proxyProtocol, prefix: s.prefix, image: s.image, bucketName: s.bucketName },
    { tasks: 3, portsPerTask: 2, versioning: true, proxyProtocol: false, prefix: 'a/b', image: 'x/y:1', bucketName: undefined },
  );
  assert.throws(() => settingsFromLookup((key) => (key === 'tasks' ? 'two' : undefined)), /^InfraConfigError: tasks: "two" is not a whole number/);
  assert.throws(() => settingsFromLookup((key) => (key === 'versioning' ? 'maybe' : undefined)), /^InfraConfigError: versioning:/);
});
