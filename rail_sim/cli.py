"""`symphony rail-sim --profile NAME --port P`: run one rail simulator.

Faults come from `--faults JSON` and the individual flags (flags win); they can
be changed while running with `POST /_sim/faults`. The idempotency store is
durable when `--state-dir` is given (one JSON-lines file per profile).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec

from rail_sim.faults import Faults
from rail_sim.profiles import PROFILES
from symphony import lifecycle
from symphony.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", required=True, choices=PROFILES, help="which operator to simulate")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="listen port")
    parser.add_argument("--state-dir", help="directory of the durable idempotency store (default: memory only)")
    parser.add_argument("--credentials-file",
                        help="JSON object of the credentials callers must present (real-rail profiles; default: "
                             "$SYMPHONY_RAIL_SIM_CREDENTIALS_FILE); never pass secrets as arguments")
    parser.add_argument("--fsync", action="store_true", help="fsync the store after each execution")
    parser.add_argument("--settle-ms", type=float, default=50.0,
                        help="asynchronous profiles: delay from acceptance to the final state (default 50)")
    parser.add_argument("--seed", type=int, help="random seed for fault sampling")
    parser.add_argument("--faults", default="{}", help="initial faults as a JSON object (see rail_sim/faults.py)")
    for name in ("error-rate", "timeout-rate", "drop-after-execute-rate", "latency-ms-median", "latency-ms-p99",
                 "hang-seconds"):
        parser.add_argument(f"--{name}", type=float, help=f"fault: {name.replace('-', ' ')}")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def faults_from(args: argparse.Namespace) -> Faults:
    try:
        raw = msgspec.json.decode(args.faults)
        if not isinstance(raw, dict):
            raise ConfigError("--faults must be a JSON object")
        for name in ("error_rate", "timeout_rate", "drop_after_execute_rate", "latency_ms_median",
                     "latency_ms_p99", "hang_seconds"):
            value = getattr(args, name)
            if value is not None:
                raw[name] = value
        return msgspec.convert(raw, Faults)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"invalid rail-sim faults: {exc}") from None


def credentials_from(args: argparse.Namespace) -> dict[str, str]:
    """The credentials file named by --credentials-file or the environment ({} when neither)."""
    import os

    path = args.credentials_file or os.environ.get("SYMPHONY_RAIL_SIM_CREDENTIALS_FILE", "")
    if not path:
        return {}
    try:
        return msgspec.json.decode(Path(path).read_bytes(), type=dict[str, str])
    except OSError as exc:
        raise ConfigError(f"cannot read the rail-sim credentials file {path}: {exc.strerror or exc}") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"the rail-sim credentials file {path} is not a JSON object of strings: {exc}") from None


def run(args: argparse.Namespace) -> int:
    faults = faults_from(args)
    credentials = credentials_from(args)
    if not 0 <= args.port <= 65535:
        raise ConfigError("--port must be in 0..65535")
    lifecycle.configure_logging("rail-sim", args.log_level)
    from rail_sim.server import serve

    state_dir = Path(args.state_dir) if args.state_dir else None
    return lifecycle.run(lambda: serve(args.profile, args.host, args.port, faults, state_dir, fsync=args.fsync,
                                       settle_ms=args.settle_ms, seed=args.seed,
                                       credentials=credentials))
