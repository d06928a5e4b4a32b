"""boto3, unchanged, reaching S3 and SQS through warrant's egress proxy.

usage: aws_client.py EDGE TASK_TOKEN MOTO QUEUE_URL
The agent holds no AWS key: its task token is boto3's `aws_session_token`
(sent as `x-amz-security-token`), and the access key it signs with is a
placeholder. The edge drops that signature and signs with the temporary
credentials warrant obtained from STS. Prints a JSON object of what each
call gave; `direct` is the same client sent straight to moto, which must
refuse the placeholder signature.
"""
import json
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

edge, token, moto, queue_url = sys.argv[1:5]
keys = {"aws_access_key_id": "AKIDPLACEHOLDER", "aws_secret_access_key": "placeholder",
        "aws_session_token": token, "region_name": "us-east-1"}
cfg = Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"})
out = {}


def error(e):
    return {"status": e.response["ResponseMetadata"]["HTTPStatusCode"],
            "code": e.response.get("Error", {}).get("Code"),
            "message": str(e)[:500]}


s3 = boto3.client("s3", endpoint_url=f"{edge}/aws-s3", config=cfg, **keys)
try:
    s3.put_object(Bucket="reports", Key="q3/summary report.txt", Body=b"numbers")
    got = s3.get_object(Bucket="reports", Key="q3/summary report.txt")
    out["s3_get"] = got["Body"].read().decode()
    listed = s3.list_objects_v2(Bucket="reports", Prefix="q3/")
    out["s3_list"] = [o["Key"] for o in listed.get("Contents", [])]
except ClientError as e:
    out["s3_error"] = error(e)

# Copies read a second object: within the route's paths, and from a bucket
# the role may read but the route does not reach.
for name, source in (("copy_within", {"Bucket": "reports", "Key": "q3/summary report.txt"}),
                     ("copy_outside", {"Bucket": "archive", "Key": "secret.txt"})):
    try:
        s3.copy_object(Bucket="reports", Key=f"q3/{name}.txt", CopySource=source)
        out[name] = s3.get_object(Bucket="reports", Key=f"q3/{name}.txt")["Body"].read().decode()
    except ClientError as e:
        out[name] = error(e)

# Reading through a copy what policy forbids reading.
try:
    s3.get_object(Bucket="reports", Key="hr/salaries.txt")
    out["hr_get"] = "read"
except ClientError as e:
    out["hr_get"] = error(e)
try:
    s3.copy_object(Bucket="reports", Key="q3/hr.txt", CopySource={"Bucket": "reports", "Key": "hr/salaries.txt"})
    out["hr_copy"] = "copied"
except ClientError as e:
    out["hr_copy"] = error(e)

# A select reads the object's data by POST.
try:
    s3.select_object_content(
        Bucket="reports", Key="hr/salaries.txt", Expression="SELECT * FROM S3Object", ExpressionType="SQL",
        InputSerialization={"CSV": {"FileHeaderInfo": "NONE"}}, OutputSerialization={"CSV": {}})
    out["hr_select"] = "read"
except ClientError as e:
    out["hr_select"] = error(e)

# A browser-style form upload names its key and ACL in form fields.
import requests  # noqa: E402

r = requests.post(f"{edge}/aws-s3/reports", headers={"x-amz-security-token": token},
                  data={"key": "q3/form.txt", "acl": "public-read"}, files={"file": ("f", b"x")}, timeout=30)
out["form_upload"] = {"status": r.status_code, "body": r.text[:500]}

# Found by the third outside review: a form upload with a urlencoded body,
# and CreateBucket with a query key S3 ignores.
r = requests.post(f"{edge}/aws-s3/reports", headers={"x-amz-security-token": token},
                  data={"key": "q3/form2.txt", "file": "x", "acl": "public-read-write"}, timeout=30)
out["urlencoded_form_upload"] = {"status": r.status_code, "body": r.text[:500]}
r = requests.post(f"{edge}/aws-s3/reports?uploads", headers={"x-amz-security-token": token},
                  data={"key": "hr/salaries.txt", "file": "overwritten", "acl": "public-read"}, timeout=30)
out["form_upload_naming_uploads"] = {"status": r.status_code, "body": r.text[:500]}
r = requests.put(f"{edge}/aws-s3/reports?x=1", headers={"x-amz-security-token": token}, timeout=30)
out["create_bucket_with_query"] = {"status": r.status_code, "body": r.text[:500]}
r = requests.post(f"{edge}/aws-sqs/", timeout=30, headers={
    "x-amz-security-token": token, "x-amz-target": "AmazonSQS.SendMessage", "action": "PurgeQueue",
    "content-type": "application/x-amz-json-1.0"}, data=json.dumps({"QueueUrl": queue_url, "MessageBody": "x"}))
out["action_header"] = {"status": r.status_code, "body": r.text[:500]}

# An operation smuggled into a JSON body as a form parameter.
r = requests.post(f"{edge}/aws-sqs/", timeout=30, headers={
    "x-amz-security-token": token, "x-amz-target": "AmazonSQS.SendMessage",
    "content-type": "application/x-amz-json-1.0"},
    data=json.dumps({"QueueUrl": queue_url, "MessageBody": "x", "x": "&Action=PurgeQueue&"}))
out["smuggled_action"] = {"status": r.status_code, "body": r.text[:500]}

# Requests that change who may read, keep or delete data: one PUT each,
# on paths the route's allow rules admit.
public = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*",
                     "Action": "s3:GetObject", "Resource": "arn:aws:s3:::reports/*"}]})
control = {
    "bucket_policy": lambda: s3.put_bucket_policy(Bucket="reports", Policy=public),
    "object_acl": lambda: s3.put_object_acl(Bucket="reports", Key="q3/summary report.txt", ACL="public-read"),
    "acl_header": lambda: s3.put_object(Bucket="reports", Key="q3/open.txt", Body=b"x", ACL="public-read-write"),
    "lifecycle": lambda: s3.put_bucket_lifecycle_configuration(Bucket="reports", LifecycleConfiguration={
        "Rules": [{"ID": "wipe", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}}]}),
}
# Found by the second outside review: the same effects by other means.
control["create_bucket_ownership"] = lambda: s3.create_bucket(Bucket="reports", ObjectOwnership="ObjectWriter")
control["copy_replacing_tags"] = lambda: s3.copy_object(
    Bucket="reports", Key="q3/summary report.txt", MetadataDirective="REPLACE", TaggingDirective="REPLACE",
    CopySource={"Bucket": "reports", "Key": "q3/summary report.txt"})
out["control"] = {}
for name, call in control.items():
    try:
        call()
        out["control"][name] = "done"
    except ClientError as e:
        out["control"][name] = error(e)

try:
    s3.delete_object(Bucket="reports", Key="q3/summary report.txt")
    out["s3_delete"] = "deleted"
except ClientError as e:
    out["s3_delete"] = error(e)

sqs = boto3.client("sqs", endpoint_url=f"{edge}/aws-sqs", config=cfg, **keys)
try:
    sqs.send_message(QueueUrl=queue_url, MessageBody="hello from an agent")
    msgs = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1).get("Messages", [])
    out["sqs_received"] = [m["Body"] for m in msgs]
except ClientError as e:
    out["sqs_error"] = error(e)
try:
    sqs.purge_queue(QueueUrl=queue_url)
    out["sqs_purge"] = "purged"
except ClientError as e:
    out["sqs_purge"] = error(e)

direct = boto3.client("s3", endpoint_url=moto, config=cfg, **keys)
try:
    direct.list_objects_v2(Bucket="reports")
    out["direct"] = "listed"
except ClientError as e:
    out["direct"] = error(e)

print(json.dumps(out))
