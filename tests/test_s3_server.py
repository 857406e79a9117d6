"""The SeaweedFS fixture serves real S3, with conditional create refused on an existing key."""

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests import harness


def test_s3(s3_server):
    b = s3_server.new_bucket()
    fs = s3_server.filesystem()
    fs.pipe(f"{b}/x", b"hello")
    assert fs.cat(f"{b}/x") == b"hello"
    with pytest.raises((FileExistsError, OSError)):
        fs.pipe(f"{b}/x", b"again", mode="create")


def test_many_buckets_each_take_writes(s3_server):
    """More buckets than `weed mini`'s default volume cap allows each take a write.

    The suite makes a fresh bucket per test; with the default cap, the tests that ran last failed with an S3
    InternalError ("no free volumes left"). The default cap follows the free disk space: the 42nd bucket
    failed on one machine, the 50th on another.
    """
    fs = s3_server.filesystem()
    # Eight at a time: each bucket's first write waits for its volumes to be made (~0.25 s, mostly idle)
    with ThreadPoolExecutor(max_workers=8) as pool:
        buckets = list(pool.map(lambda _: s3_server.new_bucket(), range(60)))
        list(pool.map(lambda bucket: fs.pipe(f"{bucket}/x", bucket.encode()), buckets))
        read = list(pool.map(lambda bucket: fs.cat(f"{bucket}/x"), buckets))
    assert read == [bucket.encode() for bucket in buckets]


def test_no_weed_port_is_another_servers_grpc_port(monkeypatch, tmp_path):
    """`weed mini` reserves every server's port + 10000 for gRPC (S3's too) and will not start a server on a
    reserved port. Drawn one by one, the S3 port came out as 40145 and the filer's as 50145 in one run, and
    every S3 test of that run failed. Here the draws are scripted to collide both ways."""
    draws = iter([40145, 50145, 30145, *range(41000, 41020)])
    monkeypatch.setattr(harness, "free_port", lambda below=65536: next(draws))
    monkeypatch.setattr(harness, "free_port_pair", lambda offset: next(draws))
    server = harness.S3Server(tmp_path)
    ports = [
        int(flag.split("=")[1]) for flag in server._cmd if re.match(r"-[a-z0-9]+\.port=", flag)
    ]
    assert server.s3_port in ports and len(ports) == len(set(ports)) == 7
    assert not {port + 10000 for port in ports} & set(ports)
