import { CfnOutput, Duration, RemovalPolicy, SecretValue, Stack, type StackProps } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import {
  CONTAINER_CONTROL_PORT,
  PUBLIC_CONTROL_PORT,
  resolveSettings,
  slotPorts,
  type InfraSettings,
} from './settings.js';

export interface S3FtpStackProps extends StackProps {
  /** Raw settings; defaults are applied and every limit is checked before anything is built. */
  settings?: Partial<InfraSettings>;
}

/** The environment variable ECS fills from the users secret; the server reads the users file's content from it. */
export const USERS_ENV = 'FTP_USERS_JSON';
const CONTAINER_NAME = 's3ftp';

/**
 * First value of a users secret this stack creates: one user whose hash is 32
 * zero bytes, which no password produces, so nobody can log in until the
 * operator stores the real users file. An empty list, or a value that is not
 * a users file, would stop every task at start (the server refuses both) and
 * fail the deployment. Never change this text: CloudFormation writes the
 * template's value again whenever it changes, over the users the operator
 * has stored.
 */
export const LOCKED_USERS_JSON = JSON.stringify({
  users: [
    {
      name: 'nobody',
      password: `scrypt$16384$8$1$${Buffer.alloc(16).toString('base64')}$${Buffer.alloc(32).toString('base64')}`,
      home: '/',
    },
  ],
});

/**
 * The actions the server's S3 driver uses on objects (HEAD is GetObject; copies
 * are GetObject plus PutObject, and their tagging actions when tags are copied;
 * an upload's SHA-256 is an object tag).
 */
const OBJECT_ACTIONS = [
  's3:GetObject',
  's3:PutObject',
  's3:DeleteObject',
  's3:GetObjectTagging',
  's3:PutObjectTagging',
  's3:AbortMultipartUpload',
  's3:ListMultipartUploadParts',
];

const ECR_IMAGE = /^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?\/([a-z0-9._/-]+)(?::[\w.-]+|@sha256:[a-f0-9]{64})?$/;

/**
 * s3ftp on AWS: a bucket, one Fargate service per task slot, and a Network
 * Load Balancer whose passive listeners each reach only the task that owns
 * the port (see infra/README.md, "Passive addressing").
 */
export class S3FtpStack extends Stack {
  readonly settings: InfraSettings;

  constructor(scope: Construct, id: string, props: S3FtpStackProps = {}) {
    super(scope, id, { description: 's3ftp: an FTP server in front of an S3 bucket', ...props });
    const s = resolveSettings(props.settings ?? {});
    this.settings = s;

    const bucket = this.bucket(s);
    const usersSecret = s.usersSecretArn
      ? secretsmanager.Secret.fromSecretCompleteArn(this, 'Users', s.usersSecretArn)
      : new secretsmanager.Secret(this, 'Users', {
          description: 's3ftp users file ({"users":[…]}), read by every task at start and re-read every 30 s',
          secretStringValue: SecretValue.unsafePlainText(LOCKED_USERS_JSON),
        });

    // Tasks sit in private subnets; S3 traffic takes the free gateway endpoint instead of the NAT.
    const vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: 2,
      natGateways: 1,
      subnetConfiguration: [
        { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
        { name: 'tasks', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 24 },
      ],
      gatewayEndpoints: { S3: { service: ec2.GatewayVpcEndpointAwsService.S3 } },
    });

    const passive = { first: s.passivePortStart, last: s.passivePortStart + s.tasks * s.portsPerTask - 1 };
    const { nlb, taskSecurityGroup, pasvAddress } = this.loadBalancer(s, vpc, passive);
    const controlTargets = this.targetGroup('ControlTargets', vpc, CONTAINER_CONTROL_PORT, s.proxyProtocol);
    nlb.addListener('Control', { port: PUBLIC_CONTROL_PORT, protocol: elbv2.Protocol.TCP, defaultTargetGroups: [controlTargets] });

    const taskRole = this.taskRole(bucket, s.prefix, s.extraBuckets);
    // The server re-reads the users secret (FTP_USERS_SECRET_ID, every FTP_USERS_RELOAD_SECONDS and on SIGHUP): its value only.
    taskRole.addToPolicy(new iam.PolicyStatement({ sid: 'ReadUsersSecret', actions: ['secretsmanager:GetSecretValue'], resources: [usersSecret.secretArn] }));
    const executionRole = new iam.Role(this, 'ExecutionRole', {
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
      description: 's3ftp task start: image pull, users secret, log writing',
    });
    const ecrImage = ECR_IMAGE.exec(s.image);
    if (ecrImage) {
      const [, account, region, name] = ecrImage;
      ecr.Repository.fromRepositoryAttributes(this, 'ImageRepository', {
        repositoryArn: `arn:${this.partition}:ecr:${region}:${account}:repository/${name}`,
        repositoryName: name!,
      }).grantPull(executionRole);
    }
    const logGroup = new logs.LogGroup(this, 'Logs', { retention: logs.RetentionDays.ONE_MONTH });
    const cluster = new ecs.Cluster(this, 'Cluster', { vpc });

    const environment: Record<string, string> = {
      FTP_HOST: '0.0.0.0',
      FTP_PORT: String(CONTAINER_CONTROL_PORT),
      FTP_PASV_ADDRESS: pasvAddress,
      S3_BUCKET: bucket.bucketName,
      S3_REGION: this.region,
    };
    if (s.prefix) environment.S3_PREFIX = s.prefix;
    // The same secret as FTP_USERS_JSON, so a new version reaches running tasks without a restart.
    environment.FTP_USERS_SECRET_ID = usersSecret.secretArn;
    if (s.extraBuckets.length > 0) environment.S3_EXTRA_BUCKETS = s.extraBuckets.join(',');

    let previous: ecs.FargateService | undefined;
    for (let slot = 0; slot < s.tasks; slot++) {
      const ports = slotPorts(s, slot);
      // Groups the slot's resources under Slot<i> in the construct tree and the logical ids.
      const scope = new Construct(this, `Slot${slot}`);
      const taskDefinition = new ecs.FargateTaskDefinition(scope, 'Task', {
        cpu: 512,
        memoryLimitMiB: 1024,
        taskRole,
        executionRole,
      });
      const portNumbers = range(ports.first, ports.last);
      taskDefinition.addContainer(CONTAINER_NAME, {
        // The image's own entry point and command (`node dist/src/main.js serve`).
        image: ecs.ContainerImage.fromRegistry(s.image),
        environment: { ...environment, FTP_PASV_PORTS: `${ports.first}-${ports.last}` },
        // ECS reads the secret at task start (execution role) and hands its value over as FTP_USERS_JSON.
        secrets: { [USERS_ENV]: ecs.Secret.fromSecretsManager(usersSecret) },
        logging: ecs.LogDrivers.awsLogs({ logGroup, streamPrefix: `slot${slot}` }),
        readonlyRootFilesystem: true,
        // After the load balancer has drained the task: the server's shutdown grace (FTP_SHUTDOWN_GRACE, 30 s) and a margin.
        stopTimeout: Duration.seconds(45),
        portMappings: [CONTAINER_CONTROL_PORT, ...portNumbers].map((containerPort) => ({ containerPort, protocol: ecs.Protocol.TCP })),
      });

      // One task per service: a second task would share this slot's passive
      // ports and could be handed another task's data connections. So a
      // deployment stops the old task before it starts the new one.
      const service = new ecs.FargateService(scope, 'Service', {
        cluster,
        taskDefinition,
        desiredCount: 1,
        minHealthyPercent: 0,
        maxHealthyPercent: 100,
        securityGroups: [taskSecurityGroup],
        vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
        assignPublicIp: false,
        circuitBreaker: { enable: true, rollback: true },
        healthCheckGracePeriod: Duration.seconds(60),
      });
      controlTargets.addTarget(service.loadBalancerTarget({ containerName: CONTAINER_NAME, containerPort: CONTAINER_CONTROL_PORT }));
      for (const port of portNumbers) {
        const targets = this.targetGroup(`Passive${port}Targets`, vpc, port, false, scope);
        targets.addTarget(service.loadBalancerTarget({ containerName: CONTAINER_NAME, containerPort: port }));
        nlb.addListener(`Passive${port}`, { port, protocol: elbv2.Protocol.TCP, defaultTargetGroups: [targets] });
      }
      // Replace one slot at a time, so a deployment never takes every task down at once.
      if (previous) service.node.addDependency(previous);
      previous = service;
    }

    new CfnOutput(this, 'FtpAddress', { value: pasvAddress, description: 'Address to give FTP clients (port 21); also the one PASV replies name' });
    new CfnOutput(this, 'LoadBalancerDnsName', { value: nlb.loadBalancerDnsName, description: 'DNS name of the FTP load balancer' });
    new CfnOutput(this, 'PassivePorts', { value: `${passive.first}-${passive.last}`, description: 'Passive ports open on the load balancer' });
    new CfnOutput(this, 'BucketName', { value: bucket.bucketName });
    new CfnOutput(this, 'UsersSecretArn', { value: usersSecret.secretArn, description: 'Put the users file here; running tasks take it within FTP_USERS_RELOAD_SECONDS (30 s)' });
    new CfnOutput(this, 'ClusterName', { value: cluster.clusterName, description: 'ECS cluster of the task slots' });
  }

  private bucket(s: InfraSettings): s3.IBucket {
    // An existing bucket keeps its owner's settings; this stack only grants the task role access to it.
    if (s.bucketName) return s3.Bucket.fromBucketName(this, 'Bucket', s.bucketName);
    return new s3.Bucket(this, 'Bucket', {
      // SSE-S3 rather than a KMS key, so the task role needs no KMS rights.
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      // Bucket policy: deny every request made without TLS (aws:SecureTransport false).
      enforceSSL: true,
      versioned: s.versioning || undefined,
      // A task killed mid-upload cannot abort its multipart upload; its parts would be billed forever.
      lifecycleRules: [{ id: 'abort-incomplete-multipart-uploads', abortIncompleteMultipartUploadAfter: Duration.days(1) }],
      removalPolicy: RemovalPolicy.RETAIN,
    });
  }

  /** The role the server runs as: the S3 driver's actions under the prefix and in the extra buckets, and nothing else. */
  private taskRole(bucket: s3.IBucket, prefix: string, extraBuckets: readonly string[]): iam.Role {
    const role = new iam.Role(this, 'TaskRole', {
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
      description: 's3ftp server: objects under its prefix in its bucket',
    });
    role.addToPolicy(
      new iam.PolicyStatement({
        sid: 'ListUnderPrefix',
        actions: ['s3:ListBucket'],
        resources: [bucket.bucketArn],
        // The server lists only with prefixes inside "prefix/".
        conditions: prefix ? { StringLike: { 's3:prefix': [`${prefix}/*`] } } : undefined,
      }),
    );
    role.addToPolicy(
      new iam.PolicyStatement({
        // The sweep of uploads left by a killed server (S3Storage.sweep) lists them without a
        // prefix (MinIO matches exact keys only) and keeps those under "prefix/".
        sid: 'SweepMultipartUploads',
        actions: ['s3:ListBucketMultipartUploads'],
        resources: [bucket.bucketArn],
      }),
    );
    role.addToPolicy(
      new iam.PolicyStatement({
        sid: 'ObjectsUnderPrefix',
        actions: OBJECT_ACTIONS,
        resources: [bucket.arnForObjects(prefix ? `${prefix}/*` : '*')],
      }),
    );
    if (extraBuckets.length > 0) {
      // Users' mounts name prefixes in these; which prefix is the users file's business, so the whole bucket.
      const extra = extraBuckets.map((name) => `arn:${this.partition}:s3:::${name}`);
      role.addToPolicy(new iam.PolicyStatement({ sid: 'ListExtraBuckets', actions: ['s3:ListBucket', 's3:ListBucketMultipartUploads'], resources: extra }));
      role.addToPolicy(new iam.PolicyStatement({ sid: 'ObjectsInExtraBuckets', actions: OBJECT_ACTIONS, resources: extra.map((arn) => `${arn}/*`) }));
    }
    return role;
  }

  private loadBalancer(s: InfraSettings, vpc: ec2.Vpc, passive: { first: number; last: number }) {
    const nlbSecurityGroup = new ec2.SecurityGroup(this, 'LoadBalancerSecurityGroup', {
      vpc,
      description: 's3ftp load balancer: FTP control and passive ports',
      allowAllOutbound: false,
    });
    const clients = ec2.Peer.ipv4(s.clientCidr);
    nlbSecurityGroup.addIngressRule(clients, ec2.Port.tcp(PUBLIC_CONTROL_PORT), 'FTP control');
    nlbSecurityGroup.addIngressRule(clients, ec2.Port.tcpRange(passive.first, passive.last), 'FTP passive data');

    // With client IP preservation the tasks see client addresses; referencing the
    // load balancer's group still admits exactly the traffic that came through it.
    const taskSecurityGroup = new ec2.SecurityGroup(this, 'TaskSecurityGroup', { vpc, description: 's3ftp tasks' });
    taskSecurityGroup.connections.allowFrom(nlbSecurityGroup, ec2.Port.tcp(CONTAINER_CONTROL_PORT), 'FTP control and health checks');
    taskSecurityGroup.connections.allowFrom(nlbSecurityGroup, ec2.Port.tcpRange(passive.first, passive.last), 'FTP passive data');

    // Static addresses, known before any task starts, so PASV can name one.
    const eips = vpc.publicSubnets.map((subnet, i) => ({ subnet, eip: new ec2.CfnEIP(this, `Address${i}`, { domain: 'vpc' }) }));
    const nlb = new elbv2.NetworkLoadBalancer(this, 'LoadBalancer', {
      vpc,
      internetFacing: true,
      subnetMappings: eips.map(({ subnet, eip }) => ({ subnet, allocationId: eip.attrAllocationId })),
      securityGroups: [nlbSecurityGroup],
      // A passive port's only target may sit in the other zone than the node the client reached.
      crossZoneEnabled: true,
    });
    return { nlb, taskSecurityGroup, pasvAddress: eips[0]!.eip.attrPublicIp };
  }

  private targetGroup(id: string, vpc: ec2.IVpc, port: number, proxyProtocol: boolean, scope: Construct = this) {
    return new elbv2.NetworkTargetGroup(scope, id, {
      vpc,
      port,
      protocol: elbv2.Protocol.TCP,
      targetType: elbv2.TargetType.IP,
      // The server accepts a data connection only from the control connection's client address.
      preserveClientIp: true,
      proxyProtocolV2: proxyProtocol,
      deregistrationDelay: Duration.seconds(30),
      // Passive ports listen only between PASV and the data connection, so every
      // target group checks the task's control port.
      healthCheck: {
        protocol: elbv2.Protocol.TCP,
        port: String(CONTAINER_CONTROL_PORT),
        interval: Duration.seconds(30),
        healthyThresholdCount: 2,
        unhealthyThresholdCount: 2,
      },
    });
  }
}

function range(first: number, last: number): number[] {
  return Array.from({ length: last - first + 1 }, (_, i) => first + i);
}
