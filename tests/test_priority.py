"""app.core.priority: a seed worker's niceness, raised and never lowered (in a child: not this process)."""

from __future__ import annotations

import subprocess
import sys


def niceness_after(*steps: int, start: int = 0) -> list[str]:
    code = "from app.core.priority import lower_priority\n" + "".join(f"print(lower_priority({n}))\n" for n in steps)
    out = subprocess.run(["nice", "-n", str(start), sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


def test_raised_to_the_setting_and_never_lowered() -> None:
    assert niceness_after(7, 3, 0, 12) == ["7", "7", "7", "12"]


def test_a_process_started_nicer_keeps_its_niceness() -> None:
    assert niceness_after(10, start=15) == ["15"]
