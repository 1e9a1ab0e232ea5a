"""``python -m examples [NAME] [ARGS...]``: run example NAME's demo (default: quickstart).

NAME is the example's folder with dashes or underscores (``memory-search``); ARGS go to its
demo (``--duration 4``, ``--serve``). ``make demo NAME`` runs this.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def names() -> list[str]:
    """The examples that have a demo, with dashes, as ``make demo`` takes them."""
    found = (path.parent.name for path in HERE.glob("*/demo.py"))
    return sorted(name.replace("_", "-") for name in found if not name.startswith("_"))


def main(argv: list[str]) -> int:
    name, args = (
        (argv[0], argv[1:]) if argv and not argv[0].startswith("-") else ("quickstart", argv)
    )
    if name.replace("_", "-") not in names():
        print(f"no example {name!r}; the examples are: {', '.join(names())}", file=sys.stderr)
        return 2
    demo = importlib.import_module(f"examples.{name.replace('-', '_')}.demo")
    code: int = demo.main(args)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
