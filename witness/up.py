"""The witness's part in `symphony up`: one witness on its own data directory
(`<data_dir>/witness/`: its key and its store), trusting the node key that
`up` wrote to `<data_dir>/keys/trusted-logs.txt`.

On one machine this shows the protocol, not the independence: in production
the witness runs under another owner, on another host (systemd/, k8s/).
"""

from __future__ import annotations

import sys
from pathlib import Path

from symphony.components import ChildSpec, UpContext
from witness.cli import keygen, load_cosigner

WITNESS_NAME = "witness.symphony.example/local-w1"


def write_policy(data_dir: Path, witness_vkey: str) -> Path:
    """`<data_dir>/keys/policy.txt`: a c2sp.org/tlog-policy an auditor of this
    demo system would use (the node key `up` made, this witness, quorum 1)."""
    node_vkey = (data_dir / "keys" / "node-log.vkey").read_text().strip()
    path = data_dir / "keys" / "policy.txt"
    path.write_text(f"# c2sp.org/tlog-policy for this `symphony up` (docs/verifying.md)\n"
                    f"log {node_vkey}\nwitness w1 {witness_vkey}\nquorum w1\n")
    return path


def components(ctx: UpContext) -> list[ChildSpec]:
    home = ctx.data_dir / "witness"
    key_file = home / "witness.pem"
    if not key_file.exists():
        keygen(WITNESS_NAME, key_file)
    port, admin_port = ctx.free_port(), ctx.free_port()
    url = f"http://127.0.0.1:{port}"
    ctx.witness_url = url  # type: ignore[attr-defined]
    witness_vkey = load_cosigner(WITNESS_NAME, str(key_file)).verifier.vkey()
    ctx.witness_vkey = witness_vkey  # type: ignore[attr-defined]
    policy = write_policy(ctx.data_dir, witness_vkey)
    return [ChildSpec(
        name="witness",
        argv=[sys.executable, "-m", "symphony", "witness"],
        endpoints={"url": url, "metrics": f"http://127.0.0.1:{admin_port}/metrics",
                   "verifier policy": f"{policy} (symphony verify … --policy)"},
        wait_port=port,
        env={
            "SYMPHONY_WITNESS_NAME": WITNESS_NAME,
            "SYMPHONY_WITNESS_KEY_FILE": str(key_file),
            "SYMPHONY_WITNESS_STATE_DIR": str(home / "state"),
            "SYMPHONY_WITNESS_TRUSTED_LOGS_FILE": str(ctx.data_dir / "keys" / "trusted-logs.txt"),
            "SYMPHONY_WITNESS_LISTEN_PORT": str(port),
            "SYMPHONY_WITNESS_ADMIN_PORT": str(admin_port),
        },
    )]
