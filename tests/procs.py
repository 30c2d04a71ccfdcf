"""Real child processes, measured or stopped at an exact point of the real code."""
import subprocess
import sys

# A child's ru_maxrss counts the memory of the process it was forked from, so a small launcher
# forks the real command and reports that one's peak alone, and how it ended.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
print(f"peak_rss_kib={usage.ru_maxrss} status={os.waitstatus_to_exitcode(status)}", file=sys.stderr)
"""


def run_measured(args, timeout=None):
    """`python ARGS` in a child: (exit status, negative for a signal; stdout; stderr; its peak RSS
    in MiB). The timeout is a bound against a hang, not a measurement."""
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)
    stderr, _, last = proc.stderr.rstrip("\n").rpartition("\n")
    rss, status = (int(field.split("=")[1]) for field in last.split())
    return status, proc.stdout, stderr, rss // 1024


# Runs `python -m stickersort.sorter ARGS` with a profile hook that sends the process a signal
# (SIGKILL, SIGSTOP) when the nth call of a named function starts: a Python function, or a C one
# such as os.symlink. A kill or a pause at an exact point, between any two steps of the real code.
_AT_CALL = """
import os, signal, sys
sig, point, nth, seen = getattr(signal, sys.argv[1]), sys.argv[2], int(sys.argv[3]), [0]
def hook(frame, event, arg):
    name = getattr(arg, "__name__", None) if event == "c_call" else frame.f_code.co_name if event == "call" else None
    if name == point:
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), sig)
sys.setprofile(hook)
sys.argv = ["stickersort", *sys.argv[4:]]
from stickersort.sorter.cli import main
main()
"""


def stickersort(args, at_call=None):
    """The command line for `stickersort ARGS`; with at_call=(signal name, function name, n),
    the process signals itself at that call."""
    if at_call:
        return [sys.executable, "-c", _AT_CALL, *map(str, at_call), *map(str, args)]
    return [sys.executable, "-m", "stickersort.sorter", *map(str, args)]
