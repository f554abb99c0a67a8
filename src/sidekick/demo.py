"""The main job of the README: run the demo system with embedded defaults.

Replaced by the webapp Pod under ``sidekick up`` once that runner exists.
"""

from __future__ import annotations

import sys


def main() -> int:
    print("sidekick demo: not available yet", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
