#!/bin/sh
# Create the objects bucket and a storage-service user limited to it, so the service never holds
# MinIO's root credentials. Idempotent: compose runs it on every `up`.
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${DANTE_S3_BUCKET:?}"
: "${DANTE_S3_ACCESS_KEY:?}" "${DANTE_S3_SECRET_KEY:?}"

mc alias set dante http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "dante/$DANTE_S3_BUCKET"

policy=/tmp/dante-storage-policy.json
sed "s/__BUCKET__/$DANTE_S3_BUCKET/g" /init/dante-storage-policy.json >"$policy"
mc admin policy create dante dante-storage "$policy"
# `user add` on an existing user resets its secret, which is what a changed env file means.
mc admin user add dante "$DANTE_S3_ACCESS_KEY" "$DANTE_S3_SECRET_KEY"
if ! mc admin user info dante "$DANTE_S3_ACCESS_KEY" | grep -q dante-storage; then
    mc admin policy attach dante dante-storage --user "$DANTE_S3_ACCESS_KEY"
fi
echo "init-bucket: bucket $DANTE_S3_BUCKET ready"
