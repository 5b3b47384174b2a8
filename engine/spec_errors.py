"""Spec errors that read like a compiler's: file:line:col, the spec path, the line, a caret."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SpecError:
    file: str
    line: int
    col: int
    path: str
    message: str
    source_line: str = ""
    keypath: tuple = field(default=(), compare=False, repr=False)  # the spec path, for deduplication

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}: {self.path}: {self.message}"
        if not self.source_line:
            return where
        return f"{where}\n    {self.source_line}\n    {' ' * (self.col - 1)}^"


def spec_path(path) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "<root>"


class SpecErrors(Exception):
    def __init__(self, errors: list[SpecError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))
