"""What the ``lazyexport`` command shows: progress bars, plans, cleaned items, redacted streams.

Progress bars appear only on a terminal's stderr; results and plans go to stdout. Every stream the
command prints to is wrapped in :class:`Redacting`, so no URL's user-info is ever shown, whichever
part of lazyexport (or a library it calls) prints it.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import TYPE_CHECKING, Any

from .errors import redact

if TYPE_CHECKING:
    from .run import Progress


class Bar:
    """A tqdm progress bar on stderr, only when it is a terminal: bytes written (and read by the
    finishing work: an OME-Zarr pyramid's levels) as :attr:`Progress.fraction` counts them, rate,
    ETA, and blocks (chunks) done / total."""

    def __init__(self, enabled: bool, label: str):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=None, unit="B", unit_scale=True, desc=label, file=sys.stderr, leave=True
            )

    def __call__(self, event: Progress) -> None:
        if self.bar is None:
            return
        work = event.bytes_total + event.finishing_total  # (the pyramid's levels read)
        self.bar.total = work
        self.bar.n = int(event.fraction * work)  # below the total until the commit
        said = f"{event.blocks_done}/{event.blocks_total} blocks"
        if event.finishing_total:
            said += f", finishing {event.finishing_done / event.finishing_total:.0%}"
        self.bar.set_postfix_str(said, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class BatchBars:
    """One progress bar line per dataset of a batch (a new bar when the nickname changes)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.nickname: str | None = None
        self.bar = Bar(False, "")

    def __call__(self, nickname: str, event: Progress) -> None:
        if nickname != self.nickname:
            self.close()
            self.nickname, self.bar = nickname, Bar(self.enabled, nickname)
        self.bar(event)

    def close(self) -> None:
        self.bar.close()
        self.nickname, self.bar = None, Bar(False, "")


class RegionBars:
    """One progress bar line per region of an export (one for an export without regions),
    opened as the region starts: labelled with the region's name, else ``label`` or the plan's
    nickname."""

    def __init__(self, enabled: bool, label: str | None = None):
        self.enabled, self.label = enabled, label
        self.bar = Bar(False, "")

    def start(self, name: str, plan: Any) -> None:
        self.bar.close()
        self.bar = Bar(self.enabled, name or self.label or plan.nickname)

    def __call__(self, name: str, event: Progress) -> None:
        self.bar(event)

    def close(self) -> None:
        self.bar.close()


def show_plans(plans, as_json: bool, throughput: Any = None) -> None:
    """Print plans (text, or one JSON document: an object, or a list for several), each with
    the requests of its parts at URLs (:func:`lazyexport.plan_requests.transfer`) at
    ``throughput`` per worker."""
    from .plan_requests import transfer

    costs = [transfer(p, throughput) for p in plans]
    if as_json:
        data = [
            {**p.summary(), **({"requests": c.summary()} if c else {})}
            for p, c in zip(plans, costs)
        ]
        print(json.dumps(data[0] if len(data) == 1 else data, indent=2))
    else:
        print("\n\n".join(str(p) + (f"\n{c}" if c else "") for p, c in zip(plans, costs)))


def print_cleaned(removed: list[str], dry_run: bool) -> None:
    for item in removed:
        print(f"{'would remove' if dry_run else 'removed'} {item}")
    if not removed:
        print("nothing to clean")


class Redacting:
    """A text stream that never shows a URL's user-info, whichever part of lazyexport (or of
    the libraries it calls) prints the URL: plans, progress lines, notes, results, tracebacks."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def redacted_output():
    before = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (s if isinstance(s, Redacting) else Redacting(s) for s in before)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = before
