"""The SeaweedFS fixture serves real S3, with conditional create refused on an existing key."""

from concurrent.futures import ThreadPoolExecutor

import pytest


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
