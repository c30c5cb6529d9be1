"""`symphony db url`: the DSN of the embedded server a running `symphony up` owns."""

from __future__ import annotations

import argparse

from symphony.db import dsn
from symphony.embedded import EmbeddedState
from symphony.errors import StartupError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    url = sub.add_parser("url", help="print the DSN of the embedded server (contains its password)")
    url.add_argument("--data-dir", metavar="DIR", help="Symphony data dir (default ./.symphony)")


def run(args: argparse.Namespace) -> int:
    assert args.action == "url"
    data_dir = dsn.data_dir_from(args.data_dir)
    state = EmbeddedState.read(data_dir)
    if state is None:
        raise StartupError(f"no embedded server is running for {data_dir} (start `symphony up --data-dir {data_dir}`)")
    print(state.dsn)
    return 0
