#!/bin/sh
# One-shot (service minio-init, image minio/mc): the lake bucket, and a MinIO user for the
# platform that may read and write that bucket only. Idempotent: safe on every `up`.
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${LAKE_BUCKET:?}"
: "${LAKE_ACCESS_KEY_ID:?}" "${LAKE_SECRET_ACCESS_KEY:?}"

mc alias set lake http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "lake/$LAKE_BUCKET"

policy=/tmp/quant-lake-policy.json
cat >"$policy" <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
     "Resource": ["arn:aws:s3:::$LAKE_BUCKET"]},
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                   "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
     "Resource": ["arn:aws:s3:::$LAKE_BUCKET/*"]}
  ]
}
JSON
mc admin policy create lake quant-lake "$policy"
mc admin user add lake "$LAKE_ACCESS_KEY_ID" "$LAKE_SECRET_ACCESS_KEY"
# Attaching an attached policy is an error in mc: accept it only when the user really has it.
if ! mc admin policy attach lake quant-lake --user "$LAKE_ACCESS_KEY_ID"; then
    info="$(mc admin user info lake "$LAKE_ACCESS_KEY_ID" --json)"
    case "$info" in
        *quant-lake*) echo "minio-init: policy quant-lake already attached" ;;
        *) echo "minio-init: could not attach policy quant-lake" >&2; exit 1 ;;
    esac
fi
echo "minio-init: bucket $LAKE_BUCKET ready for user $LAKE_ACCESS_KEY_ID"
