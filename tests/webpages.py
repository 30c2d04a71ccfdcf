"""What the page tests share (test_web.py, test_browse.py): a stickersort server in a process of
its own, plain HTTP to it (urllib and raw sockets), and a real headless Chromium."""
import json
import queue
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

STARTUP = 60  # seconds; the box may be busy

# No proxy: the test box may have one configured, and the server is local.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Served:
    """`python -m stickersort.sorter ARGS` until stop(); url: where it says it serves."""

    def __init__(self, *args, descriptors=None):
        def child():
            # A suite run from a background shell job ignores SIGINT, and children inherit
            # that; a user's terminal does not.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            if descriptors:  # the usual shell limit, hard too, as issue 28 found the server dying under
                resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, descriptors))
        self.proc = subprocess.Popen([sys.executable, "-m", "stickersort.sorter", *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=child)
        self.lines = queue.Queue()
        self.stderr = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = None
        deadline = time.monotonic() + STARTUP
        while self.url is None and time.monotonic() < deadline and self.proc.poll() is None:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if "http://" in line:
                self.url = line.split("http://", 1)[1].split()[0].rstrip("/")
        assert self.url, f"{args[0]} did not start (exit {self.proc.poll()}): {''.join(self.stderr)}"
        self.url = f"http://{self.url}"
        self.port = int(self.url.rsplit(":", 1)[1])

    def _read(self):
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put(line)

    def threads(self):
        return int(next(line.split()[1] for line in open(f"/proc/{self.proc.pid}/status") if line.startswith("Threads:")))

    def cpu_seconds(self):
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / 100

    def stop(self, seconds=60):
        """Ctrl-C; the exit status."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=seconds)
        finally:
            self.proc.kill()


def get(url, timeout=30, headers=None, data=None):
    """(status, body) of a GET (a POST with data)."""
    try:
        with HTTP.open(urllib.request.Request(url, data=data, headers=headers or {}), timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get_json(url, **kwargs):
    status, body = get(url, **kwargs)
    return status, json.loads(body)


def raw(url, request_head):
    """The status line and body of a request written by hand (Host headers urllib would fix)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(request_head.encode() + b"\r\n\r\n")
        received = b""
        while chunk := s.recv(65536):
            received += chunk
            if b"\r\n\r\n" in received and b"Content-Length" in received.split(b"\r\n\r\n")[0]:
                head, body = received.split(b"\r\n\r\n", 1)
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
    head, _, body = received.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body


def chromium(tmp_path):
    """A real headless Chromium through Selenium, or a skip saying what to install."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (binary and driver):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-proxy-server", "--window-size=1280,900", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
