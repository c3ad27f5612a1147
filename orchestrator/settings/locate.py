"""Where a configured value came from (an environment variable, a secrets file or file:line),
for error messages that point at the line to fix."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

DEFAULT_CONFIG = Path("config/liveorch.toml")


_TABLE_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\[\]#]+?)\s*\]\]?\s*(#.*)?$")
_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_KEY_LINE = re.compile(rf"^\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")


def _key_parts(raw: str) -> list[str]:
    return [p.strip("\"'") for p in re.findall(_KEY_PART, raw)]


def _key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Line of every key and table by its full path, arrays of tables by index: ``http.port``
    and ``mqtt.port`` are different keys, ``rooms.1`` is the second ``[[rooms]]`` (a search for
    the last key name blamed the first ``port =`` or ``[[rooms]]`` of the file)."""
    lines: dict[tuple[str | int, ...], int] = {}
    table: tuple[str | int, ...] = ()
    arrays: dict[tuple[str | int, ...], int] = {}
    in_multiline = False
    for i, line in enumerate(text.splitlines(), start=1):
        quotes = line.count('"""') + line.count("'''")
        if in_multiline:
            in_multiline = quotes % 2 == 0
            continue
        header = _TABLE_HEADER.match(line)
        if header is not None:
            aot = header.group(1) == "[["
            parts = _key_parts(header.group(2))
            resolved: list[str | int] = []
            for j, part in enumerate(parts):
                resolved.append(part)
                key = tuple(resolved)
                if aot and j == len(parts) - 1:
                    arrays[key] = arrays.get(key, -1) + 1
                    resolved.append(arrays[key])
                elif key in arrays:  # [rooms.recovery] belongs to the latest [[rooms]]
                    resolved.append(arrays[key])
            table = tuple(resolved)
            lines.setdefault(table, i)
            continue
        m = _KEY_LINE.match(line)
        if m is not None:
            lines.setdefault((*table, *_key_parts(m.group(1))), i)
        in_multiline = quotes % 2 == 1
    return lines


class Locator:
    """Says where a value came from: an environment variable, a secrets file or file:line."""

    def __init__(self, file: Path | None, text: str, env: Mapping[str, str]) -> None:
        self.file = file
        self._lines = _key_lines(text) if text else {}
        self._env = {k.upper(): k for k in env if k.upper().startswith("LIVEORCH_")}
        self.origins: dict[tuple[str | int, ...], str] = {}
        """Values filled from outside the file (secrets files, CLOUD_SDK_* variables)."""

    @property
    def file_where(self) -> str:
        if self.file is not None:
            return str(self.file)
        return f"no config file ({DEFAULT_CONFIG} not found; defaults + environment only)"

    def __call__(self, loc: tuple[int | str, ...]) -> str:
        parts = [str(p) for p in loc]
        for n in range(len(parts), 0, -1):  # env wins over the file: blame the variable
            name = "LIVEORCH_" + "__".join(parts[:n]).upper()
            if name in self._env:
                return f"environment variable {self._env[name]}"
        for n in range(len(loc), 0, -1):
            origin = self.origins.get(tuple(loc[:n]))
            if origin is not None:
                return origin
        for n in range(len(loc), 0, -1):
            line = self._lines.get(tuple(loc[:n]))
            if line is not None:
                return f"{self.file_where}:{line}"
        return self.file_where
