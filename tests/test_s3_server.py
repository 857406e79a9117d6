"""The SeaweedFS fixture serves real S3, with conditional create refused on an existing key."""

import pytest


def test_s3(s3_server):
    b = s3_server.new_bucket()
    fs = s3_server.filesystem()
    fs.pipe(f"{b}/x", b"hello")
    assert fs.cat(f"{b}/x") == b"hello"
    with pytest.raises((FileExistsError, OSError)):
        fs.pipe(f"{b}/x", b"again", mode="create")


def test_many_buckets_each_take_writes(s3_server):
    """More buckets than `weed mini`'s default volume cap allows (41 here) each take a write.

    The suite makes a fresh bucket per test; with the default cap, the tests that ran last failed with an S3
    InternalError ("no free volumes left").
    """
    fs = s3_server.filesystem()
    buckets = [s3_server.new_bucket() for _ in range(45)]  # the default cap broke at the 42nd
    for bucket in buckets:
        fs.pipe(f"{bucket}/x", bucket.encode())
    assert [fs.cat(f"{bucket}/x") for bucket in buckets] == [bucket.encode() for bucket in buckets]
