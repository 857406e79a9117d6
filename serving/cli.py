"""The serving command: ``python -m serving usage | new-key | revoke``.

* ``usage --app NAME``: usage by key id and model of a running app (joins the cluster: ``--address``,
  else ``$RAY_ADDRESS``, else the local ``ray start`` cluster).
* ``new-key --id ID --file keys.json``: makes a key, adds its hash to the key file (written by
  renaming a complete copy over it; running ingresses pick it up) and prints the secret, once.
* ``revoke --id ID --file keys.json``: marks a key revoked (refused within a reload interval).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from serving.auth import ApiKey, KeyFile, hash_key, load_key_file
from serving.errors import KeyFileError

console = Console()


def _write_key_file(path: Path, keys: KeyFile) -> None:
    """Writes ``keys`` to ``path`` atomically (a complete copy renamed over it)."""
    if path.suffix.lower() != ".json":
        raise KeyFileError(f"{path}: new-key and revoke write JSON key files only")
    text = json.dumps(keys.model_dump(mode="json", exclude_none=True), indent=2) + "\n"
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def new_key(
    path: Path,
    key_id: str,
    requests_per_minute: int | None = None,
    tokens_per_minute: int | None = None,
    project: str | None = None,
) -> str:
    """Adds a new key to the key file at ``path`` (made if absent); returns its secret.

    Raises:
        KeyFileError: the file is invalid, or ``key_id`` is taken.
    """
    keys = load_key_file(path) if path.exists() else KeyFile()
    if any(key.id == key_id for key in keys.keys):
        raise KeyFileError(f"{path}: key id {key_id!r} exists (revoke it or choose another id)")
    secret = f"sk-{secrets.token_urlsafe(32)}"
    entry = ApiKey(
        id=key_id,
        sha256=hash_key(secret),
        project=project,
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
    )
    _write_key_file(path, KeyFile(keys=[*keys.keys, entry]))
    return secret


def revoke_key(path: Path, key_id: str) -> None:
    """Marks ``key_id`` revoked in the key file at ``path``.

    Raises:
        KeyFileError: the file is invalid, or has no such key.
    """
    keys = load_key_file(path)
    if not any(key.id == key_id for key in keys.keys):
        raise KeyFileError(f"{path}: no key {key_id!r}")
    updated = [
        key.model_copy(update={"revoked": True}) if key.id == key_id else key for key in keys.keys
    ]
    _write_key_file(path, KeyFile(keys=updated))


def _usage(options: argparse.Namespace) -> None:
    import ray

    from serving.usage import read_usage

    if not ray.is_initialized():
        address = options.address or os.environ.get("RAY_ADDRESS") or "auto"
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    records = read_usage(options.app)
    if options.json:
        print(json.dumps([record.model_dump() for record in records]))
        return
    table = Table(title=f"usage of app {options.app!r}")
    for column in ("key", "model", "requests", "prompt tokens", "generated tokens"):
        table.add_column(column, justify="left" if column in ("key", "model") else "right")
    for record in records:
        table.add_row(
            record.key_id,
            record.model,
            str(record.requests),
            str(record.prompt_tokens),
            str(record.completion_tokens),
        )
    console.print(table)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    usage = commands.add_parser("usage", help="usage by key and model of a running app")
    usage.add_argument("--app", required=True, help="the Serve app name (ServingConfig.app_name)")
    usage.add_argument("--address", help="Ray cluster address")
    usage.add_argument("--json", action="store_true", help="one JSON list instead of a table")
    made = commands.add_parser("new-key", help="add a key to a key file; prints its secret")
    made.add_argument("--id", required=True, dest="key_id")
    made.add_argument("--file", required=True, type=Path)
    made.add_argument("--requests-per-minute", type=int)
    made.add_argument("--tokens-per-minute", type=int)
    made.add_argument("--project")
    revoked = commands.add_parser("revoke", help="mark a key of a key file revoked")
    revoked.add_argument("--id", required=True, dest="key_id")
    revoked.add_argument("--file", required=True, type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns the exit status (2: a bad key file or argument)."""
    options = _parser().parse_args(argv)
    try:
        if options.command == "usage":
            _usage(options)
        elif options.command == "new-key":
            secret = new_key(
                options.file,
                options.key_id,
                options.requests_per_minute,
                options.tokens_per_minute,
                options.project,
            )
            print(secret)
            print(f"key {options.key_id!r} added to {options.file}", file=sys.stderr)
        else:
            revoke_key(options.file, options.key_id)
            print(f"key {options.key_id!r} revoked in {options.file}", file=sys.stderr)
    except (KeyFileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
