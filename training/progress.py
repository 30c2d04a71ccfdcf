"""What a person watching `train` or `evaluate` sees, on stderr: tqdm bars where a terminal shows
them (a log file, a pipe or a test gets none, as scan's bar), and a line for each step worth
keeping in a log. `quiet` (the commands' -q) turns both off."""
import sys

from tqdm import tqdm


def bar(iterable=None, quiet=False, **kwargs):
    return tqdm(iterable, file=sys.stderr, disable=True if quiet else None, leave=False, dynamic_ncols=True,
                **kwargs)


def say(message, quiet=False):
    if not quiet:
        tqdm.write(message, file=sys.stderr)  # above a bar being drawn, not through it
