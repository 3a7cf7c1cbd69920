"""Walking the real-world corpus: which files are messages."""

from __future__ import annotations

from pathlib import Path

# Expectation and licence files that sit beside the messages.
NOT_MESSAGES = {".json", ".tsv", ".md", ".rst", ".py"}
NOT_MESSAGE_NAMES = {"LICENSE", "README", "COPYING", "NOTICE"}


def message_files(root: Path) -> list[Path]:
    """Every message file below `root`, mbox files excepted, sorted."""
    files = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() in NOT_MESSAGES:
            continue
        if path.stem.upper() in NOT_MESSAGE_NAMES or "summary" in path.name:
            continue
        if "mbox" in path.parts or path.suffix == ".mbox" or path.name.endswith(".mbox.txt"):
            continue
        files.append(path)
    return files
