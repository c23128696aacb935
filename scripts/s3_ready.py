"""Exit 0 when a signed ListBuckets on the S3 endpoint argv[1] answers 200.

Standard library only, so it runs before any venv exists. Credentials come
from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment.
"""
import datetime, hashlib, hmac, os, sys, urllib.request
ep = sys.argv[1]; host = ep.split("//", 1)[1]
ak = os.environ["AWS_ACCESS_KEY_ID"]; sk = os.environ["AWS_SECRET_ACCESS_KEY"]
t = datetime.datetime.now(datetime.timezone.utc)
amz = t.strftime("%Y%m%dT%H%M%SZ"); day = t.strftime("%Y%m%d")
ph = hashlib.sha256(b"").hexdigest()
creq = "\n".join(["GET", "/", "", "host:" + host, "x-amz-content-sha256:" + ph, "x-amz-date:" + amz, "",
                  "host;x-amz-content-sha256;x-amz-date", ph])
scope = day + "/us-east-1/s3/aws4_request"
sts = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(creq.encode()).hexdigest()])
k = ("AWS4" + sk).encode()
for part in (day, "us-east-1", "s3", "aws4_request"):
    k = hmac.new(k, part.encode(), hashlib.sha256).digest()
sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
auth = "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=%s" % (ak, scope, sig)
req = urllib.request.Request(ep + "/", headers={"x-amz-date": amz, "x-amz-content-sha256": ph, "Authorization": auth})
sys.exit(0 if urllib.request.urlopen(req, timeout=2).status == 200 else 1)
