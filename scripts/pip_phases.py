"""Where a ``pip install --log FILE`` spent its time: resolving (with the downloads pip makes to
read each wheel's metadata), building wheels, installing. Read from the log's timestamps.

Usage: python scripts/pip_phases.py PIP_LOG
"""

from __future__ import annotations

import re
import sys
from datetime import datetime

STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d),(\d{3}) (.*)$")
SIZE = re.compile(r"Downloading \S+ \(([\d.]+) (kB|MB|GB)\)")
UNITS = {"kB": 1e-3, "MB": 1.0, "GB": 1e3}


def phases(lines: list[str]) -> dict[str, float]:
    times: list[tuple[float, str]] = []
    for line in lines:
        match = STAMP.match(line)
        if match:
            stamp = datetime.fromisoformat(match[1]).timestamp() + int(match[2]) / 1000
            times.append((stamp, match[3]))
    if not times:
        return {}
    start, end = times[0][0], times[-1][0]
    install = next((t for t, text in times if text.startswith("Installing collected packages")), end)
    building, build_started = 0.0, None
    for stamp, text in times:
        if text.startswith(("Building wheel", "Building editable")) and build_started is None:
            build_started = stamp
        elif text.startswith(("Created wheel", "Successfully built")) and build_started is not None:
            building += stamp - build_started
            build_started = None
    sizes = [float(m[1]) * UNITS[m[2]] for _, text in times if (m := SIZE.search(text))]
    return {
        "resolve_and_download_s": install - start - building,
        "build_s": building,
        "install_s": end - install,
        "downloads": len(sizes),
        "download_mb": sum(sizes),
    }


def main(path: str) -> int:
    with open(path, encoding="utf-8", errors="replace") as log:
        found = phases(log.read().splitlines())
    if not found:
        print(f"pip_phases: no timestamped lines in {path}")
        return 1
    print(
        "pip phases: resolving {resolve_and_download_s:.0f} s "
        "(with {downloads} downloads, {download_mb:.0f} MB), "
        "building {build_s:.0f} s, installing {install_s:.0f} s".format(**found)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
