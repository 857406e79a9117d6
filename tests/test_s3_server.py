"""The SeaweedFS fixture serves real S3, with conditional create refused on an existing key."""

def test_s3(s3_server):
    b = s3_server.new_bucket()
    fs = s3_server.filesystem()
    fs.pipe(f"{b}/x", b"hello")
    assert fs.cat(f"{b}/x") == b"hello"
    import pytest
    with pytest.raises((FileExistsError, OSError)):
        fs.pipe(f"{b}/x", b"again", mode="create")
