"""YAML in, plain values plus a map from spec path to source position out.

Compiling keeps the marks so every error can point at file:line:column with a caret,
while the compiled spec itself holds only plain values."""
from __future__ import annotations

from dataclasses import dataclass, field

import yaml

try:
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - pyyaml built without libyaml
    _Loader = yaml.SafeLoader


@dataclass
class Source:
    path: str
    text: str
    value: object
    marks: dict = field(default_factory=dict)  # path tuple -> (line, col), 1-based
    # path tuple -> the Source it was written in, for a spec resolved from several files
    # (engine/overlay.py); empty when every value comes from this one
    origin: dict = field(default_factory=dict)

    def mark(self, path: tuple) -> tuple[int, int]:
        """Position of the nearest enclosing node that has one."""
        p = tuple(path)
        while p:
            if p in self.marks:
                return self.marks[p]
            p = p[:-1]
        return self.marks.get((), (1, 1))

    def locate(self, path: tuple) -> tuple[str, int, int, str]:
        """(file, line, col, source line) of the nearest enclosing node that has a position."""
        p = tuple(path)
        while p and p not in self.marks:
            p = p[:-1]
        line, col = self.marks.get(p, (1, 1))
        src = self.origin.get(p, self)
        return src.path, line, col, src.line(line)

    def line(self, n: int) -> str:
        lines = self.text.splitlines()
        return lines[n - 1] if 0 < n <= len(lines) else ""


def _convert(node, path: tuple, marks: dict, loader):
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, (int, float, bool)) or key is None:
                # YAML reads `on:`/`null:`/`1:` keys as bools/None/ints; specs key by strings.
                key = key_node.value
            sub = path + (key,)
            out[key] = _convert(value_node, sub, marks, loader)
            # keys point at the key text, which is where a reader looks for them
            marks.setdefault(sub + ("<key>",), (key_node.start_mark.line + 1, key_node.start_mark.column + 1))
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(v, path + (i,), marks, loader) for i, v in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load_text(text: str, path: str = "<string>") -> Source:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        marks: dict = {}
        value = _convert(node, (), marks, loader) if node is not None else None
    finally:
        loader.dispose()
    return Source(path=path, text=text, value=value, marks=marks)


def load_file(path) -> Source:
    with open(path, encoding="utf-8") as f:
        return load_text(f.read(), str(path))
