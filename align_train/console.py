"""What align-train tells a person: one line per event, on the main process, on stderr.

Every part of the run reports through here (``log``), and every command reports its failure
through ``fail``, so messages look the same wherever they come from and a multi-process run
prints each once. Standard output is kept for what a command produces (a summary, a job
script, a table).

Progress (the training loop's, a download's) is a bar that redraws in place when stderr is a
terminal, and plain lines otherwise (a log file, a batch job): never a redraw in a file. While a
bar is shown, ``log`` lines are written above it.
"""

from __future__ import annotations

import importlib
import io
import math
import os
import sys
import time

PROGRAM = ["align-train"]  # the command being run, named in every line (set by the entry point)
_BAR: list = []  # the progress bar being shown, if any: log lines go above it


def is_main_process() -> bool:
    from align_train.distributed import process_state

    return process_state().is_main_process


def is_terminal(stream=None) -> bool:
    """A terminal a bar can be drawn on (a pseudo-terminal without a width, as under some job runners, is not)."""
    stream = sys.stderr if stream is None else stream
    try:
        if not stream.isatty():
            return False
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, ValueError, OSError):
        return False


def log(message: str, topic: str | None = None, every_process: bool = False) -> None:
    """``[align-train] topic: message`` on stderr (main process only unless asked)."""
    if every_process or is_main_process():
        prefix = f"[{PROGRAM[0]}] " + (f"{topic}: " if topic else "")
        if _BAR:
            _BAR[-1].write(prefix + message, file=sys.stderr)
        else:
            print(prefix + message, file=sys.stderr, flush=True)


def fail(err: BaseException, exit_code: int = 2) -> None:
    """``align-train: error: ...`` and the exit code (a preempted run says so and exits 75)."""
    code = getattr(err, "exit_code", None) or exit_code
    label = "preempted" if getattr(err, "exit_code", None) else "error"
    print(f"{PROGRAM[0]}: {label}: {err}", file=sys.stderr, flush=True)
    sys.exit(code)


# --------------------------------------------------------------------------- numbers a person reads


def duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h07m``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def number(value) -> str:
    """A metric as a short, readable number (4 significant digits; scientific when tiny or huge)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) < 1e-3 or abs(value) >= 1e5:
        return f"{value:.2e}"
    return f"{value:.4g}"


# --------------------------------------------------------------------------- the training loop's progress


class Progress:
    """Steps of a loop toward a total, with rate and ETA: a bar on a terminal, nothing drawn elsewhere.

    ``line`` prints a line (above the bar when there is one); ``status`` is the step / total, rate and
    ETA part that plain output adds to its lines instead of a bar.
    """

    def __init__(self, total: int, initial: int = 0, desc: str = "train", stream=None, bar: bool | None = None):
        self.total = max(int(total or 0), 0)
        self.start_step = self.step = int(initial)
        self.started = time.monotonic()
        self.stream = sys.stderr if stream is None else stream
        self.bar = None
        if is_terminal(self.stream) if bar is None else bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total or None, initial=initial, desc=desc, unit="step", file=self.stream,
                            dynamic_ncols=True, leave=True, smoothing=0.1)
            _BAR.append(self.bar)

    def restart_clock(self) -> None:
        """Measure the rate from now (work before the first step, e.g. a baseline evaluation, is not a step)."""
        self.started = time.monotonic()
        self.start_step = self.step
        if self.bar is not None:
            self.bar.reset(total=self.bar.total)
            self.bar.update(self.step)

    def update(self, step: int) -> None:
        if self.bar is not None and step > self.step:
            self.bar.update(step - self.step)
        self.step = max(self.step, step)

    def rate(self) -> float | None:
        """Seconds per step since this process started (resumed steps do not count)."""
        done = self.step - self.start_step
        return (time.monotonic() - self.started) / done if done > 0 else None

    def eta(self) -> float | None:
        per_step = self.rate()
        return None if per_step is None or not self.total else per_step * max(self.total - self.step, 0)

    def status(self) -> str:
        total = f"/{self.total}" if self.total else ""
        percent = f" ({100 * self.step / self.total:.0f}%)" if self.total else ""
        per_step = self.rate()
        speed = "" if per_step is None else (f", {per_step:.2f} s/step" if per_step >= 1 else
                                             f", {1 / per_step:.2f} step/s")
        eta = f", ETA {duration(self.eta())}" if self.total and per_step is not None and self.step < self.total else ""
        return f"step {self.step}{total}{percent}{speed}{eta}"

    def line(self, text: str) -> None:
        prefix = f"[{PROGRAM[0]}] "
        if self.bar is not None:
            self.bar.write(prefix + text, file=self.stream)
        else:
            print(prefix + text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            if self.bar in _BAR:
                _BAR.remove(self.bar)
            self.bar = None


# --------------------------------------------------------------------------- downloads


class _Sink(io.TextIOBase):
    """Where a plain-line download bar's own drawing goes: nowhere (its lines go through ``log``)."""

    def write(self, text):
        return len(text)

    def isatty(self):
        return False


def line_download_class(base: type, every: float = 30.0) -> type:
    """A subclass of the hub's tqdm that, off a terminal, reports as lines: at the start, every ``every`` s, at the end.

    On a terminal (or when the hub's progress bars are turned off) it is the hub's bar unchanged.
    """

    class LineDownload(base):
        interval = every

        def __init__(self, *args, **kwargs):
            self._plain = kwargs.get("disable") is None and not is_terminal(kwargs.get("file"))
            self._last_line = None
            self._closing = False
            if self._plain:
                kwargs.update(disable=False, file=_Sink())
            super().__init__(*args, **kwargs)

        def display(self, msg=None, pos=None):
            if not getattr(self, "_plain", False):
                return super().display(msg, pos)
            now = time.monotonic()
            if self._last_line is None or self._closing or now - self._last_line >= self.interval:
                self._last_line = now
                log(self.plain_line(), topic="download")
            return True

        def close(self):
            if getattr(self, "_plain", False) and not self.disable:
                self._closing = True
            super().close()

        def plain_line(self) -> str:
            d = self.format_dict
            done = self.format_sizeof(d["n"]) + ("B" if d.get("unit") == "B" else "")
            elapsed, rate = d["elapsed"], d.get("rate") or (d["n"] / d["elapsed"] if d["elapsed"] else None)
            speed = f", {self.format_sizeof(rate)}{d.get('unit') or ''}/s" if rate else ""
            if d.get("total"):
                total = self.format_sizeof(d["total"]) + ("B" if d.get("unit") == "B" else "")
                left = (d["total"] - d["n"]) / rate if rate else None
                when = "done in " + duration(elapsed) if d["n"] >= d["total"] else f"ETA {duration(left)}"
                return f"{d.get('prefix') or 'file'}: {100 * d['n'] / d['total']:.0f}% ({done} of {total}{speed}, {when})"
            return f"{d.get('prefix') or 'file'}: {done}{speed}"

    LineDownload.__name__ = LineDownload.__qualname__ = "LineDownload"
    return LineDownload


def show_downloads() -> None:
    """Hub downloads (models, and the files of hub datasets) report their progress: bars or plain lines."""
    import huggingface_hub.utils

    hub_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")
    huggingface_hub.utils.enable_progress_bars()
    if not getattr(hub_tqdm.tqdm, "_align_train_lines", False):
        replacement = line_download_class(hub_tqdm.tqdm)
        replacement._align_train_lines = True
        hub_tqdm.tqdm = replacement
