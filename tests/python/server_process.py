"""Starts the real convserve-server (CPU backend) on free loopback ports for a test.

The binary comes from $CONVSERVE_SERVER (CMake passes $<TARGET_FILE:convserve-server>).
Its output goes to a log file that is printed when something fails.
"""

import os
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import convserve

STARTUP_TIMEOUT_S = 60.0  # generous: a loaded 2-core CI machine


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """One convserve-server subprocess; use as a context manager."""

    def __init__(self, extra_args=()):
        self.binary = os.environ.get("CONVSERVE_SERVER")
        if not self.binary:  # ctest always sets it; only a hand-run without it skips
            raise unittest.SkipTest("set CONVSERVE_SERVER to the convserve-server binary")
        if not os.access(self.binary, os.X_OK):
            raise RuntimeError(f"CONVSERVE_SERVER={self.binary} is not an executable (not built?)")
        self.extra_args = list(extra_args)
        self.workdir = tempfile.TemporaryDirectory(prefix="convserve-pytest-")
        self.log_path = os.path.join(self.workdir.name, "server.log")
        self.process = None
        self.target = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        # A port picked here can be taken by someone else before the server binds it: retry.
        for attempt in range(3):
            port, metrics_port = _free_port(), _free_port()
            args = [self.binary, f"--listen=127.0.0.1:{port}",
                    f"--metrics_listen=127.0.0.1:{metrics_port}", "--device=cpu",
                    f"--state_dir={self.workdir.name}/state", *self.extra_args]
            with open(self.log_path, "ab") as log:
                log.write(f"$ {' '.join(args)}\n".encode())
                log.flush()
                self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                                cwd=self.workdir.name)
            self.target = f"127.0.0.1:{port}"
            if self._wait_until_serving():
                return
            self.stop()
        raise RuntimeError(f"convserve-server did not start:\n{self.log()}")

    def _wait_until_serving(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            # A fresh channel per try: a refused connection puts a channel into reconnect
            # backoff (1 s and growing), which would only slow the start down.
            with convserve.Client(self.target) as client:
                try:
                    client.list_layers(timeout=1.0)
                    return True
                except convserve.ConvserveError:
                    time.sleep(0.05)
        return False

    def stop(self):
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as log:
                return log.read()[-20000:]
        except OSError:
            return "(no server log)"

    def cleanup(self):
        self.stop()
        self.workdir.cleanup()


class ServerTestCase(unittest.TestCase):
    """Starts one server and one Client for the whole test class; prints the log on failure."""

    server_args = ()  # extra convserve-server flags, e.g. ("--allow_shared_memory",)
    server = None
    client = None

    @classmethod
    def setUpClass(cls):
        cls.server = ServerProcess(cls.server_args)
        cls.server.start()
        cls.client = convserve.Client(cls.server.target, timeout=120)

    @classmethod
    def tearDownClass(cls):
        if cls.client is not None:
            cls.client.close()
        if cls.server is not None:
            alive = cls.server.process is not None and cls.server.process.poll() is None
            cls.server.stop()
            if not alive:
                print(f"\nconvserve-server had exited; its log:\n{cls.server.log()}")
            cls.server.cleanup()

    def run(self, result=None):
        # Print the server's log under any test that failed, to see the server's side of it.
        before = len(result.failures) + len(result.errors) if result is not None else 0
        result = super().run(result)
        failed = result is not None and len(result.failures) + len(result.errors) > before
        if failed and self.server is not None:
            print(f"\n--- convserve-server log (tail) ---\n{self.server.log()[-6000:]}")
        return result
