"""c2sp.org/tlog-proof@v1: an offline-verifiable inclusion proof in one text file.

    c2sp.org/tlog-proof@v1
    extra <base64>          (optional; Symphony: the record's canonical bytes)
    index <leaf index>
    <base64 hash>           (the inclusion path, leaf's sibling first)
    …
                            (an empty line)
    <the signed, cosigned checkpoint, verbatim>
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from symphony.tlog import merkle

HEADER = "c2sp.org/tlog-proof@v1"
MAX_PATH = 63
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")


class ProofFormatError(ValueError):
    """A proof file that does not follow c2sp.org/tlog-proof@v1."""


@dataclass(frozen=True)
class ProofFile:
    index: int
    path: list[bytes]
    checkpoint: bytes  # the signed note, verbatim
    extra: bytes | None = None

    def text(self) -> bytes:
        lines = [HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode())
        lines.append(f"index {self.index}")
        lines += [base64.b64encode(h).decode() for h in self.path]
        return ("\n".join(lines) + "\n\n").encode() + self.checkpoint

    @classmethod
    def parse(cls, data: bytes) -> ProofFile:
        head, sep, signed = data.partition(b"\n\n")
        if not sep:
            raise ProofFormatError("no empty line before the checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError:
            raise ProofFormatError("the proof lines must be ASCII") from None
        if lines[0] != HEADER:
            raise ProofFormatError(f"the first line must be {HEADER}")
        rest = lines[1:]
        extra = None
        try:
            if rest and rest[0].startswith("extra "):
                extra = base64.b64decode(rest.pop(0)[len("extra "):], validate=True)
            if not rest or not rest[0].startswith("index ") or not _DECIMAL.fullmatch(rest[0][len("index "):]):
                raise ProofFormatError("expected `index <decimal without leading zeros>`")
            index = int(rest.pop(0)[len("index "):])
            if len(rest) > MAX_PATH:
                raise ProofFormatError(f"an inclusion path has at most {MAX_PATH} hashes")
            path = [base64.b64decode(line, validate=True) for line in rest]
        except binascii.Error:
            raise ProofFormatError("a line is not base64") from None
        if any(len(h) != merkle.HASH_SIZE for h in path):
            raise ProofFormatError("an inclusion path hash is not 32 bytes")
        return cls(index, path, signed, extra)
