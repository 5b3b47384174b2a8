"""A constant subtree folded at compile time (engine/nodes.py, engine/serialize.py)."""


class Const:
    """Marker for a folded constant during compilation (never reaches the hot path)."""
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value
