"""`symphony witness`: run the witness, or make its key.

    symphony witness [--config FILE]               serve the C2SP tlog-witness API
    symphony witness keygen --name NAME --key-file FILE   new Ed25519 key (0600); prints its vkey
    symphony witness vkey [--config FILE]          the running configuration's verifier key

Exit codes: 0 ok, 2 configuration error, 3 start-up failure (port in use,
unreadable state or key).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from symphony import config, lifecycle
from symphony.arguments import add_config_argument
from symphony.errors import ConfigError, StartupError
from symphony.keys import private_key_from_pem, write_new_private_key
from symphony.tlog import checkpoint
from witness.config import WitnessConfig, trusted_logs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", default="serve", choices=("serve", "keygen", "vkey"),
                        help="serve (default), keygen or vkey")
    add_config_argument(parser, "witness")
    parser.add_argument("--name", help="keygen: the witness's key name (a schema-less URL)")
    parser.add_argument("--key-file", help="keygen: where to write the private key (mode 0600)")


def load_cosigner(name: str, key_file: str) -> checkpoint.Cosigner:
    if not key_file:
        raise ConfigError("key_file is required (make one with `symphony witness keygen`)")
    path = Path(key_file)
    try:
        key = private_key_from_pem(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise StartupError(f"witness key {path} is unreadable: {exc}") from None
    return checkpoint.Cosigner(name, key)


def keygen(name: str, key_file: Path) -> checkpoint.Cosigner:
    """Write a new key (refusing to overwrite one) and return its cosigner."""
    key_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        key = write_new_private_key(key_file)
    except FileExistsError:
        raise ConfigError(f"{key_file} exists; not overwriting a witness key") from None
    return checkpoint.Cosigner(name, key)


def run(args: argparse.Namespace) -> int:
    if args.action == "keygen":
        if not args.name or not args.key_file:
            raise ConfigError("keygen needs --name and --key-file")
        print(keygen(args.name, Path(args.key_file)).verifier.vkey())
        return 0
    settings = config.load(WitnessConfig, "witness", args.config)
    cosigner = load_cosigner(settings.name, settings.key_file)
    if args.action == "vkey":
        print(cosigner.verifier.vkey())
        return 0
    logs = trusted_logs(settings)
    if not settings.state_dir:
        raise ConfigError("state_dir is required: the witness keeps its own store")
    lifecycle.configure_logging("witness", settings.log_level)
    from witness.server import serve

    return lifecycle.run(lambda: serve(
        cosigner, logs, Path(settings.state_dir), host=settings.listen_host, port=settings.listen_port,
        admin_host=settings.admin_host, admin_port=settings.admin_port,
        body_bytes_max=settings.request_body_bytes_max, timeout_seconds=settings.request_timeout_seconds))
