"""Locating the real client binaries (Codex CLI, Claude Code) that some end-to-end tests drive.

`.ci/run` installs them from the npm registry into .tools/<name>/; a developer can point at
their own with CODEX_094_BIN / CODEX_BIN / CLAUDE_BIN. Tests needing one skip, naming what to
install, when it is absent."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / ".tools"


def find(env_var: str, tools_dir: str, exe: str, on_path: bool = True) -> str | None:
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit
    local = TOOLS / tools_dir / "node_modules" / ".bin" / exe
    if local.exists():
        return str(local)
    return shutil.which(exe) if on_path else None
