"""c2sp.org/tlog-policy: which logs and which witness quorum a verifier trusts.

    log <vkey> [<url>]
    witness <name> <vkey> [<url>]
    group <name> all|any|<k> <member>...
    quorum <name>|none

Symphony's one deviation, documented in docs/verifying.md: a log key named
`<prefix>/<node>` is accepted for every origin under that name (one node key
signs the checkpoints of all the node's streams and epochs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from symphony.tlog import checkpoint, note

MAX_ENTRIES = 256


class PolicyError(ValueError):
    """A policy file that does not parse, or a checkpoint the policy does not accept."""


@dataclass
class Policy:
    logs: list[note.Verifier] = field(default_factory=list)
    witnesses: dict[str, note.Verifier] = field(default_factory=dict)
    groups: dict[str, tuple[int, list[str]]] = field(default_factory=dict)
    quorum: str = ""

    @classmethod
    def parse(cls, text: str) -> Policy:
        policy = cls()
        names: set[str] = {"none"}
        seen_keys: set[bytes] = set()
        for number, raw in enumerate(text.split("\n"), start=1):
            words = raw.replace("\t", " ").split()
            if not words or words[0].startswith("#"):
                continue
            where = f"policy line {number}"
            if any(ord(c) < 0x20 and c != "\t" for c in raw):
                raise PolicyError(f"{where}: control character")
            kind, args = words[0], words[1:]
            if kind == "log" and 1 <= len(args) <= 2:
                key = _vkey(args[0], note.ED25519, where)
                if key.public_key in seen_keys:
                    raise PolicyError(f"{where}: duplicate key")
                seen_keys.add(key.public_key)
                policy.logs.append(key)
            elif kind == "witness" and 2 <= len(args) <= 3:
                name, key = args[0], _vkey(args[1], note.COSIGNATURE_V1, where)
                if name in names or key.public_key in seen_keys:
                    raise PolicyError(f"{where}: duplicate name or key")
                names.add(name)
                seen_keys.add(key.public_key)
                policy.witnesses[name] = key
            elif kind == "group" and len(args) >= 3:
                name, threshold, members = args[0], args[1], args[2:]
                if name in names:
                    raise PolicyError(f"{where}: duplicate name {name}")
                if len(set(members)) != len(members) or any(m not in names or m == "none" for m in members):
                    raise PolicyError(f"{where}: members must be distinct witnesses or groups defined above")
                k = {"all": len(members), "any": 1}.get(threshold)
                if k is None:
                    if not threshold.isdigit() or not 1 <= int(threshold) <= len(members):
                        raise PolicyError(f"{where}: threshold must be all, any or 1..{len(members)}")
                    k = int(threshold)
                names.add(name)
                policy.groups[name] = (k, members)
            elif kind == "quorum" and len(args) == 1:
                if policy.quorum:
                    raise PolicyError(f"{where}: a second quorum line")
                if args[0] not in names:
                    raise PolicyError(f"{where}: quorum {args[0]} is not defined above")
                policy.quorum = args[0]
            else:
                raise PolicyError(f"{where}: cannot read {raw.strip()[:60]!r}")
            if len(policy.logs) + len(policy.witnesses) + len(policy.groups) > MAX_ENTRIES:
                raise PolicyError(f"policy has more than {MAX_ENTRIES} entries")
        if not policy.quorum:
            raise PolicyError("policy has no quorum line")
        return policy

    def satisfied(self, name: str, cosigned: set[str]) -> bool:
        if name == "none":
            return True
        if name in self.witnesses:
            return name in cosigned
        k, members = self.groups[name]
        return sum(self.satisfied(member, cosigned) for member in members) >= k

    def verify(self, signed: bytes) -> tuple[checkpoint.Checkpoint, dict[str, int]]:
        """The checkpoint if a listed log signed it and the quorum cosigned it;
        returns it with the cosigners that verified (policy name -> timestamp)."""
        text, _ = _split(signed)
        origin = text.split("\n", 1)[0]
        logs = [key for key in self.logs if checkpoint.key_covers(key.name, origin)]
        if not logs:
            raise PolicyError(f"no log in the policy signs origin {origin!r}")
        try:
            opened, signatures = checkpoint.open_checkpoint(signed, logs[0]) if len(logs) == 1 else \
                _open_any(signed, logs)
            by_key = checkpoint.verify_cosignatures(opened.text(), signatures, list(self.witnesses.values()))
        except checkpoint.CheckpointError as exc:
            raise PolicyError(str(exc)) from None
        cosigned = {name: by_key[key.name] for name, key in self.witnesses.items() if key.name in by_key}
        if not self.satisfied(self.quorum, set(cosigned)):
            raise PolicyError(f"the witness quorum {self.quorum!r} is not met "
                              f"(cosigned by: {', '.join(sorted(cosigned)) or 'nobody'})")
        return opened, cosigned


def _split(signed: bytes) -> tuple[str, list[note.Signature]]:
    try:
        return note.split(signed)
    except note.NoteError as exc:
        raise PolicyError(str(exc)) from None


def _open_any(signed: bytes, logs: list[note.Verifier]) -> tuple[checkpoint.Checkpoint, list[note.Signature]]:
    errors = []
    for key in logs:
        try:
            return checkpoint.open_checkpoint(signed, key)
        except checkpoint.CheckpointError as exc:
            errors.append(str(exc))
    raise checkpoint.CheckpointError("; ".join(errors))


def _vkey(text: str, signature_type: int, where: str) -> note.Verifier:
    try:
        key = note.Verifier.parse(text)
    except note.NoteError as exc:
        raise PolicyError(f"{where}: {exc}") from None
    if key.signature_type != signature_type:
        raise PolicyError(f"{where}: key type 0x{key.signature_type:02x}, expected 0x{signature_type:02x}")
    return key
