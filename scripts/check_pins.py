"""Check that a constraints file pins every distribution installed in this environment, at the
installed version: anything it leaves out, pip chose on its own (and may choose differently, or
backtrack over, on the next machine).

Usage: python scripts/check_pins.py CONSTRAINTS [IGNORED_NAME ...]
"""

from __future__ import annotations

import re
import sys
from importlib import metadata


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(constraints: str, *ignored: str) -> int:
    pins: dict[str, str] = {}
    with open(constraints, encoding="utf-8") as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                pins[_norm(name.split("[", 1)[0])] = version.strip()
    skip = {_norm(n) for n in ignored} | {"pip", "setuptools", "wheel"}
    problems = []
    installed = {_norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
    for name, version in sorted(installed.items()):
        if name in skip:
            continue
        if name not in pins:
            problems.append(f"{name}=={version} is installed but {constraints} does not pin it")
        elif pins[name] != version:
            problems.append(f"{name}=={version} is installed but {constraints} pins {pins[name]}")
    for problem in problems:
        print(f"check_pins: {problem}")
    if problems:
        print("check_pins: regenerate the constraints with `make constraints`")
        return 1
    count = len(installed.keys() - skip)
    print(f"check_pins: all {count} distributions pinned by {constraints}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
