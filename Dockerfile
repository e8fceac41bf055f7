# syntax=docker/dockerfile:1
# s3ftp image: `docker build -t s3ftp .`, then see the README ("Run with Docker").
ARG NODE_IMAGE=node:24-bookworm-slim

# Build: every dependency, then the TypeScript compiler over src/ alone; only dist/src leaves this stage.
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npx tsc -b tsconfig.build.json

# Runtime: production dependencies from the lockfile and the compiled server, run as the image's "node" user.
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
# Root of the local-directory driver when no S3_BUCKET is set; writable by the server's user.
RUN mkdir /data && chown node:node /data
USER node
# Inside a container the server must listen on every interface; the port mapping decides who reaches it.
ENV FTP_HOST=0.0.0.0 \
    FTP_PORT=2121 \
    FTP_PASV_PORTS=30000-30099 \
    HEALTH_HOST=0.0.0.0 \
    HEALTH_PORT=9090 \
    DATA_DIR=/data
# As npm start: glibc keeps up to 64 MiB of freed heap, and buffers under 32 MiB (8 MiB upload parts) on the heap,
# instead of returning pages to the kernel and faulting them in again for every transfer buffer (README, "Memory").
ENV GLIBC_TUNABLES=glibc.malloc.trim_threshold=67108864:glibc.malloc.mmap_threshold=33554432
EXPOSE 2121 30000-30099 9090
# The slim image has no curl: Node's own fetch asks /healthz (liveness; /readyz also needs the storage).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.HEALTH_PORT || 9090) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "--max-semi-space-size=2", "--heap-growing-percent=50", "--expose-gc", "dist/src/main.js"]
CMD ["serve"]
