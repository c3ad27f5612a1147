"""Module and class sizes of the package, for the structure targets (#22).

Usage: python scripts/sizes.py [PACKAGE_DIR]   (default: orchestrator)

Prints the largest modules and classes and the median module size. Lines are physical lines
of the file (``wc -l``); a class's size is from its ``class`` line to its last line.
"""

from __future__ import annotations

import ast
import statistics
import sys
from pathlib import Path


def main(root: str = "orchestrator") -> None:
    mods: list[tuple[int, str]] = []
    classes: list[tuple[int, int, str]] = []
    for path in sorted(Path(root).rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        mods.append((len(text.splitlines()), str(path)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                methods = sum(
                    isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) for n in node.body
                )
                size = node.end_lineno - node.lineno + 1
                classes.append((size, methods, f"{path}:{node.name}"))
    mods.sort(reverse=True)
    classes.sort(reverse=True)
    sizes = [n for n, _ in mods]
    median = statistics.median(sizes)
    print(f"modules: {len(mods)}; total lines: {sum(sizes)}; median: {median:.0f}")
    print(f"modules over 500 lines: {sum(n > 500 for n in sizes)}")
    print(f"classes over 400 lines: {sum(c[0] > 400 for c in classes)}")
    print("largest modules:")
    for n, p in mods[:12]:
        print(f"  {n:5d}  {p}")
    print("largest classes (lines, methods):")
    for n, m, name in classes[:10]:
        print(f"  {n:5d} {m:3d}  {name}")


if __name__ == "__main__":
    main(*sys.argv[1:])
