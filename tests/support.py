"""What tests share beside fixtures: the checkout's paths and polling (import this, not conftest: each
test folder has a conftest of its own)."""

import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples" / "conversations.jsonl"


def wait_for(predicate, timeout: float = 10.0) -> bool:
    """Poll ``predicate`` every 0.1 s until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False
