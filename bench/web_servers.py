"""Which WSGI server to put under the live and browse pages: each candidate serves the same small
Flask app (a JSON route and an endless MJPEG stream of a 40 KB JPEG) in a process limited to
1,024 descriptors (the soft limit, as a user's shell has; with --hard-limit the hard one too), and is put through what broke werkzeug's threaded server
(issue 28): 1,100 idle connections, then a normal request; the clients leave, then another; then
Ctrl-C.

    python bench/web_servers.py [--servers werkzeug,waitress,cheroot] [--idle 1100] [--hard-limit]

Prints one line per server: MJPEG frames/s to one viewer, the request's seconds while the idle
connections are open and after they leave, the server's CPU and threads meanwhile, and how long
Ctrl-C took. A candidate that is not installed is skipped.
"""
import argparse
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import cv2
import numpy as np

IDLE_TIMEOUT = 10  # seconds: what cheroot is given, as stickersort gives waitress (serving.IDLE_TIMEOUT)
THREADS = 8


def app():
    from flask import Flask, Response, jsonify
    rng = np.random.default_rng(0)
    noise = cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), np.uint8), (0, 0), 1.5)
    jpeg = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()[:40_000]
    flask = Flask(__name__)

    @flask.get("/ping")
    def ping():
        return jsonify(ok=True)

    @flask.get("/stream.mjpg")
    def stream():
        part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (len(jpeg), jpeg)
        return Response(iter(lambda: part, None), mimetype="multipart/x-mixed-replace; boundary=frame")
    return flask


def start(name, wsgi):
    """The server listening on a free port, serving in a thread: (port, stop)."""
    if name == "werkzeug":
        from werkzeug.serving import make_server
        server = make_server("127.0.0.1", 0, wsgi, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server.port, lambda: (server.shutdown(), server.server_close())
    if name == "waitress":  # as stickersort runs it (sorter/serving.py)
        from stickersort.sorter.serving import Server
        server = Server(wsgi, "127.0.0.1", 0).start()
        return server.port, server.stop
    if name == "cheroot":
        from cheroot.wsgi import Server
        server = Server(("127.0.0.1", 0), wsgi, numthreads=THREADS, max=THREADS, timeout=IDLE_TIMEOUT)
        server.prepare()
        threading.Thread(target=server.serve, daemon=True).start()
        return server.bind_addr[1], server.stop
    raise SystemExit(f"unknown server {name}")


def serve(name, hard_too):
    """The server's own process: prints its port, runs until Ctrl-C, as `live --web` does."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024 if hard_too else hard))
    port, stop = start(name, app())
    print(port, flush=True)
    try:
        while True:
            time.sleep(0.2)
    except KeyboardInterrupt:
        stop()


HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def request_seconds(port, timeout=120):
    started = time.perf_counter()
    try:
        with HTTP.open(f"http://127.0.0.1:{port}/ping", timeout=timeout) as r:
            r.read()
        return round(time.perf_counter() - started, 2)
    except OSError:
        return f"failed after {time.perf_counter() - started:.0f} s"


def fps(port, seconds=3.0):
    with HTTP.open(f"http://127.0.0.1:{port}/stream.mjpg", timeout=30) as r:
        got, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            got += r.read1(1 << 16).count(b"--frame\r\n")
    return round(got / seconds)


def cpu_and_threads(pid, seconds=3.0):
    def ticks():
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    before = ticks()
    time.sleep(seconds)
    cpu = (ticks() - before) / os.sysconf("SC_CLK_TCK") / seconds
    threads = next(line.split()[1] for line in open(f"/proc/{pid}/status") if line.startswith("Threads:"))
    return f"{cpu:.0%} CPU, {threads} threads"


def idle_connections(port, n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    return socks


def measure(name, idle, hard_too):
    proc = subprocess.Popen([sys.executable, __file__, "--serve", name] + ["--hard-limit"] * hard_too, stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        port = int(proc.stdout.readline())
        result = {"frames/s": fps(port)}
        socks = idle_connections(port, idle)
        time.sleep(1)
        result["request with idle open"] = request_seconds(port)
        result["meanwhile"] = cpu_and_threads(proc.pid)
        for s in socks:
            s.close()
        time.sleep(1)
        result["request after they left"] = request_seconds(port)
        result["then"] = cpu_and_threads(proc.pid)
        proc.send_signal(signal.SIGINT)
        started = time.perf_counter()
        try:
            proc.wait(timeout=15)
            result["Ctrl-C"] = f"{time.perf_counter() - started:.1f} s"
        except subprocess.TimeoutExpired:
            result["Ctrl-C"] = "ignored for 15 s"
    finally:
        proc.kill()
        proc.wait()
    print(f"{name:<9} " + "; ".join(f"{k}: {v}" for k, v in result.items()), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="werkzeug,waitress,cheroot")
    parser.add_argument("--idle", type=int, default=1100)
    parser.add_argument("--hard-limit", action="store_true",
                        help="1,024 descriptors as the hard limit too (`ulimit -n 1024`), not the soft one only")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.hard_limit)
    # This side holds the idle connections: it needs more descriptors than the server has.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.idle + 512), hard))
    from importlib.util import find_spec
    for name in args.servers.split(","):
        if find_spec(name) is None:
            print(f"{name:<9} not installed, skipped")
            continue
        measure(name, args.idle, args.hard_limit)


if __name__ == "__main__":
    main()
