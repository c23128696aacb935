"""Drives MinIO's Python SDK (the `minio` package, Apache-2.0) as the test
oracle for the MinIO backend. The Rust tests run it with the test venv's
Python; it never talks to anything but the loopback address it is given.

Usage:
  minio_sdk.py crypto   < jobs.json   # payload encryption, see run_crypto
  minio_sdk.py admin URL < ops.json   # MinioAdmin calls, see run_admin

Secrets arrive on stdin or in the environment (MINIO_SDK_SECRET), never
in argv.
"""

import hashlib
import json
import os
import sys

from minio import crypto
from minio.credentials import StaticProvider
from minio.error import MinioAdminException
from minio.minioadmin import MinioAdmin


class BytesResponse:
    """The urllib3-style response `minio.crypto.decrypt` reads from."""

    def __init__(self, data):
        self._data = data
        self._pos = 0

    def read(self, n=-1):
        if n is None or n < 0:
            n = len(self._data) - self._pos
        chunk = self._data[self._pos:self._pos + n]
        self._pos += len(chunk)
        return chunk

    def close(self):
        pass

    def release_conn(self):
        pass


def run_crypto(jobs):
    """Each job: {"op": "encrypt"|"decrypt"|"pbkdf2", "password", "hex"
    (payload or ciphertext) | "salt" (hex, for pbkdf2)}. Answers
    {"hex": ...} or {"error": ...} per job, in order."""
    out = []
    for job in jobs:
        try:
            if job["op"] == "encrypt":
                data = crypto.encrypt(bytes.fromhex(job["hex"]), job["password"])
            elif job["op"] == "decrypt":
                data = crypto.decrypt(
                    BytesResponse(bytes.fromhex(job["hex"])), job["password"]
                )
            elif job["op"] == "pbkdf2":
                data = hashlib.pbkdf2_hmac(
                    "sha256",
                    job["password"].encode(),
                    bytes.fromhex(job["salt"]),
                    8192,
                    32,
                )
            else:
                raise ValueError("unknown op " + job["op"])
            out.append({"hex": data.hex()})
        except Exception as e:  # the test asserts on the error
            out.append({"error": f"{type(e).__name__}: {e}"})
    return out


def run_admin(url, ops):
    """Each op: {"call": MinioAdmin method name, "args": [...], "kwargs": {}}.
    Answers {"result": str} or {"error": str, "status": ...} per op."""
    host = url.split("://", 1)[1].rstrip("/")
    admin = MinioAdmin(
        endpoint=host,
        credentials=StaticProvider(
            os.environ["MINIO_SDK_ACCESS_KEY"], os.environ["MINIO_SDK_SECRET"]
        ),
        secure=url.startswith("https://"),
    )
    out = []
    for op in ops:
        try:
            result = getattr(admin, op["call"])(*op.get("args", []), **op.get("kwargs", {}))
            out.append({"result": result})
        except MinioAdminException as e:
            out.append({"error": str(e), "status": e._code})
        except Exception as e:
            out.append({"error": f"{type(e).__name__}: {e}"})
    return out


def main():
    jobs = json.load(sys.stdin)
    if sys.argv[1] == "crypto":
        result = run_crypto(jobs)
    elif sys.argv[1] == "admin":
        result = run_admin(sys.argv[2], jobs)
    else:
        raise SystemExit("usage: minio_sdk.py crypto|admin URL")
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
