"""API keys (Ray-free): hashed key files, reload on change, revocation, bad files and headers."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from serving.auth import (
    ANONYMOUS_KEY_ID,
    MAX_AUTHORIZATION_BYTES,
    SHARED_KEY_ID,
    KeyLimits,
    KeyRing,
    hash_key,
    load_key_file,
)
from serving.errors import AuthenticationError, KeyFileError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write_keys(path: Path, keys: list[dict]) -> None:
    """Writes a key file by renaming a complete copy over it, as documented."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"keys": keys}))
    os.replace(tmp, path)


def entry(key_id: str, secret: str, **extra: object) -> dict:
    return {"id": key_id, "sha256": hash_key(secret), **extra}


def bearer(secret: str) -> str:
    return f"Bearer {secret}"


def test_keys_are_found_by_hash_with_their_own_limits_or_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    write_keys(path, [entry("alice", "sk-a", requests_per_minute=5), entry("bob", "sk-b")])
    ring = KeyRing(path=path, defaults=KeyLimits(tokens_per_minute=100))
    alice = ring.authenticate(bearer("sk-a"))
    assert alice.key_id == "alice"
    assert alice.limits == KeyLimits(requests_per_minute=5, tokens_per_minute=100)
    assert ring.authenticate(bearer("sk-b")).limits == KeyLimits(tokens_per_minute=100)
    for header in (None, "", "Bearer", "Bearer ", "Basic sk-a", bearer("sk-c"), "sk-a"):
        with pytest.raises(AuthenticationError):
            ring.authenticate(header)
    assert "sk-a" not in path.read_text()


def test_the_shared_key_is_one_key_beside_the_file_and_no_key_means_anonymous(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.json"
    write_keys(path, [entry("alice", "sk-a")])
    ring = KeyRing(shared_key="sk-shared", path=path)
    assert ring.authenticate(bearer("sk-shared")).key_id == SHARED_KEY_ID
    assert ring.authenticate(bearer("sk-a")).key_id == "alice"
    assert KeyRing(shared_key="sk-shared").authenticate("bearer  sk-shared ").key_id == "default"
    open_ring = KeyRing()
    assert not open_ring.required
    assert open_ring.authenticate(None).key_id == ANONYMOUS_KEY_ID


def test_added_and_revoked_keys_apply_without_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "keys.json"
    write_keys(path, [entry("alice", "sk-a")])
    ring = KeyRing(path=path, reload_interval_s=1.0, clock=clock)
    write_keys(path, [entry("alice", "sk-a", revoked=True), entry("bob", "sk-b")])
    assert ring.authenticate(bearer("sk-a")).key_id == "alice"  # not checked again yet
    clock.now = 1.5
    with pytest.raises(AuthenticationError, match="revoked"):
        ring.authenticate(bearer("sk-a"))
    assert ring.authenticate(bearer("sk-b")).key_id == "bob"
    write_keys(path, [entry("bob", "sk-b")])  # removed altogether
    clock.now = 3.0
    with pytest.raises(AuthenticationError, match="Incorrect"):
        ring.authenticate(bearer("sk-a"))
    assert ring.reloads == 3


def test_an_unchanged_file_is_not_read_again(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "keys.json"
    write_keys(path, [entry("alice", "sk-a")])
    ring = KeyRing(path=path, reload_interval_s=0.5, clock=clock)
    for step in range(1, 20):
        clock.now = step
        assert not ring.reload_if_changed()
    assert ring.reloads == 1


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("keys.json", "{not json", "malformed"),
        ("keys.json", '{"keys": [{"id": "a"}]}', "keys.0.sha256"),
        ("keys.json", '{"keys": [{"id": "a b", "sha256": "' + "0" * 64 + '"}]}', "keys.0.id"),
        ("keys.json", '{"keys": [], "extra": 1}', "extra"),
        ("keys.json", '{"keys": [{"id": "a", "sha256": "' + "0" * 64 + '", "rpm": 1}]}', "rpm"),
        (
            "keys.json",
            json.dumps({"keys": [entry("a", "x"), entry("a", "y")]}),
            "duplicate id",
        ),
        ("keys.json", json.dumps({"keys": [entry("a", "x"), entry("b", "x")]}), "duplicate"),
        ("keys.toml", "[[keys]\nid = 1", "malformed"),
        ("keys.yaml", "keys: [a: b: c", "malformed"),
        (
            "keys.json",
            '{"keys": [{"id": "a", "sha256": "' + "0" * 64 + '", "requests_per_minute": 0}]}',
            "requests_per_minute",
        ),
    ],
)
def test_a_malformed_key_file_is_a_clear_error_naming_file_and_field(
    tmp_path: Path, name: str, text: str, needle: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(KeyFileError, match=needle) as caught:
        load_key_file(path)
    assert str(path) in caught.value.message
    with pytest.raises(KeyFileError):
        KeyRing(path=path)
    with pytest.raises(KeyFileError, match="cannot read"):
        load_key_file(tmp_path / "absent.json")


def test_toml_and_yaml_key_files(tmp_path: Path) -> None:
    digest = hash_key("sk-t")
    toml = tmp_path / "keys.toml"
    toml.write_text(f'[[keys]]\nid = "t"\nsha256 = "{digest}"\ntokens_per_minute = 9\n')
    assert load_key_file(toml).keys[0].tokens_per_minute == 9
    yaml = tmp_path / "keys.yml"
    yaml.write_text(f"keys:\n  - id: y\n    sha256: '{digest}'\n")
    assert KeyRing(path=yaml).authenticate(bearer("sk-t")).key_id == "y"


def test_a_bad_reload_keeps_the_previous_keys_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    path = tmp_path / "keys.json"
    write_keys(path, [entry("alice", "sk-a")])
    ring = KeyRing(path=path, clock=clock)
    path.write_text('{"keys": [{"id": "alice", "sha256": "short"}]}')
    with caplog.at_level(logging.ERROR, logger="serving.auth"):
        for step in range(2, 6):
            clock.now = step
            assert ring.authenticate(bearer("sk-a")).key_id == "alice"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "previous 1 keys stay" in errors[0].getMessage()
    assert "short" not in errors[0].getMessage()  # values are not echoed
    os.remove(path)  # a missing file keeps the keys too
    clock.now = 10
    assert ring.authenticate(bearer("sk-a")).key_id == "alice"
    write_keys(path, [entry("bob", "sk-b")])
    clock.now = 12
    assert ring.authenticate(bearer("sk-b")).key_id == "bob"


def test_an_overlong_authorization_header_is_refused_before_hashing(tmp_path: Path) -> None:
    ring = KeyRing(shared_key="sk-shared")
    secret = "x" * MAX_AUTHORIZATION_BYTES
    long_ring = KeyRing(shared_key=secret)
    with pytest.raises(AuthenticationError, match="longer than"):
        long_ring.authenticate(bearer(secret))
    with pytest.raises(AuthenticationError, match="longer than"):
        ring.authenticate("Bearer " + "y" * (1 << 20))
