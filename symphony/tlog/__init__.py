"""Transparency-log formats, to the published specifications: RFC 9162 Merkle
trees and proofs (`merkle`), C2SP signed notes (`note`), checkpoints and
cosignatures (`checkpoint`). Pure functions over bytes: no I/O, no database."""
