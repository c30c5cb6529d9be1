"""The `symphony` command: a registry of subcommands, each in its own module.

Each subcommand module exposes `add_arguments(parser)` and `run(args) -> int`.
Modules are imported only when their command runs, so `symphony --help` stays
fast and one daemon's missing piece never breaks another's command. An operating
error (`SymphonyError`) becomes one line on stderr and its exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from symphony import __version__
from symphony.errors import EXIT_USAGE, SymphonyError

# name -> (module, one-line summary). The surface is relied on by operators,
# systemd units and tests: add freely, never rename.
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("symphony.app.up", "run the whole system (embedded PostgreSQL unless --database-url)"),
    "migrate": ("symphony.app.commands.migrate", "apply pending database migrations"),
    "db": ("symphony.app.commands.db", "database helpers (db url: DSN of the embedded server)"),
    "sidecar": ("ingress_sidecar.cli", "run the attest-before-forward ingress sidecar"),
    "forwarder": ("forwarder.cli", "ship journal streams to PostgreSQL"),
    "relayer": ("relayer.cli", "drive the payment outbox to the rails"),
    "outbox": ("relayer.outbox_cli", "operate on outbox rows (redrive a dead letter)"),
    "service": ("payments_service.cli", "run the reference payments API behind the sidecar"),
    "rail-sim": ("rail_sim.cli", "run a rail simulator with fault injection"),
    "repair": ("repair.cli", "run the reconciliation daemon, or list/show/resolve incidents"),
    "audit": ("repair.audit_cli", "audit the record: gap, ghosts, seq-gaps, verify-chain, verify-log"),
    "dashboard": ("repair.dashboard_cli", "serve the read-only regulator dashboard"),
    "participant": ("repair.participant_cli", "list, show, suspend, reinstate or revoke the tokens of a participant"),
    "evidence": ("repair.evidence_cli", "build or verify the signed evidence bundle"),
    "reconcile": ("repair.reconcile_cli", "match a rail's statement to the outbox; incidents for every difference"),
    "verify": ("symphony.app.commands.verify", "verify checkpoints, proofs, journal copies and exports offline (files and public keys only)"),
    "export": ("repair.export_cli", "write a signed export of a window (records, proofs, outbox) for an outsider"),
    "proof": ("repair.proof_cli", "prove from PostgreSQL that a record is in its stream's log (tlog-proof file)"),
    "witness": ("witness.cli", "cosign checkpoints consistent with the last one seen (C2SP tlog-witness)"),
    "journal": ("journal.cli", "verify or dump a journal stream"),
    "demo": ("symphony.app.demo", "demo helpers: token for a demo participant, traffic"),
    "chaos": ("symphony.app.chaos", "run a failure scenario against a running system"),
}


def _top_level_help() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: symphony COMMAND [options]",
        "",
        "Symphony attests every request before it executes and proves that nothing",
        "was lost: ingress sidecar, journal, forwarder, relayer, repair and audit.",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Run `symphony COMMAND --help` for a command's options.",
              "Exit codes: 0 ok, 1 findings, 2 usage or configuration, 3 start-up failure, 4 runtime failure."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_top_level_help())
        return 0
    if args[0] == "--version":
        print(f"symphony {__version__}")
        return 0
    name = args[0]
    if name not in COMMANDS:
        print(f"symphony: error: unknown command {name!r}; see `symphony --help`", file=sys.stderr)
        return EXIT_USAGE
    module_name, summary = COMMANDS[name]
    # A module that fails to import is a broken installation: let it raise.
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"symphony {name}", description=summary)
    module.add_arguments(parser)
    parsed = parser.parse_args(args[1:])
    try:
        return int(module.run(parsed))
    except SymphonyError as exc:
        print(f"symphony {name}: error: {exc.reason}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`symphony … | head`): not an error.
        # stdout goes to /dev/null so the final flush at exit stays quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0


if __name__ == "__main__":
    sys.exit(main())
