"""Files and their names. Whole-file writes: every media and JSON file goes to a temporary name beside its target and is
renamed into place when complete, so readers (the UI, the API, the next asset) only ever see whole
files. Pure stdlib + pydantic, so media code, resources and wiring all use the same one."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it vanishes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600: every output file gets the same mode as ffmpeg's
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_model(path: Path, model: BaseModel) -> Path:
    """A pydantic model as indented JSON, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(model.model_dump_json(indent=2), encoding="utf-8")
    return path


def slug(text: str, limit: int = 40, fallback: str = "job") -> str:
    """A lowercase ASCII name part for folders, job ids and ComfyUI file prefixes: runs of anything
    but a-z0-9 become one '-'. Text with no ASCII letters (a Korean product name) gives `fallback`."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")
    return name or fallback


_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth(text: str, limit: int) -> int:
    """How deep the brackets of a JSON text nest (strings skipped; counting stops past `limit`).
    Checked before json.loads on untrusted text, so a hostile body never drives the parser into a
    RecursionError: on CPython 3.11 one can leave the interpreter's recursion count off, and a
    later ast.parse in the same process then fails."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
        elif token in "]}":
            depth -= 1
    return deepest


def source_version(*modules: ModuleType) -> str:
    """A digest of the modules' source files: a version that changes exactly when their code does."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]
