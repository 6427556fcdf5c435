"""Storage roots — a local directory, ``file://``, ``s3://`` or ``gs://`` — behind one small
interface.

Everything goes through :class:`pyarrow.fs.FileSystem`, so writer, compactor and scanner have
one code path; only sealing differs. Every file is first serialised completely in memory
(Parquet with page checksums, see :func:`parquet_bytes`), then sealed:

* local: write to a hidden temp name in the target directory, ``fsync`` the file, ``rename``
  it over the final name (atomic on POSIX), ``fsync`` the directory. A SIGKILL at any moment
  leaves either no final file or a complete one; at worst a hidden temp file remains, which
  no reader lists. A failed write (a full disk) removes its temp file and raises a
  :class:`StorageError` naming the path.
* object stores (S3, GCS): an object becomes visible only when its upload completes, and a
  killed process leaves none (or an invisible incomplete multipart upload). But pyarrow (26)
  *completes* an upload whenever an output stream is closed or garbage-collected, also after an
  exception, and its Python API has no ``abort()``: a write that fails half-way publishes the
  half it sent (measured against SeaweedFS: ``tests/test_storage_s3.py``). So the bytes are
  uploaded under a hidden temp name, and only once the upload completed with the right size
  (asked of the server) copied to the final name — a server-side copy, visible atomically —
  and the temp object deleted. A failure deletes the temp object and leaves the final name as
  it was. Cost: a HEAD, a copy and a delete per sealed file, at checkpoint cadence. A process
  killed between the copy and the delete leaves a hidden temp object, which readers never
  list and compaction removes once stale.

Roots accepted (:data:`ACCEPTED`): a local path, ``file:`` URIs of local paths, ``s3://bucket/
prefix``, and ``gs://bucket/prefix`` where pyarrow has GCS support. Anything else that looks like
a URI — ``http://``, ``S3://``, ``hdfs://``, ``s3:/b`` (a URI whose ``//`` something like
``pathlib.Path`` collapsed) — is refused, so it never becomes a folder under the working
directory.

S3 configuration comes from the environment only: the endpoint from ``EDGESWEEP_S3_ENDPOINT``
(else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``; unset means AWS), the region from
``AWS_REGION`` / ``AWS_DEFAULT_REGION``, credentials from the standard AWS chain (env vars,
``~/.aws`` files, instance metadata) — resolved by pyarrow and by Polars, never passed through
edgesweep's own objects, so they cannot end up in a table, a log line or a report. GCS
credentials likewise come from Google's default chain.
"""

from __future__ import annotations

import io
import math
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import StorageError, StorageWarning
from .layout import temp_name

ENDPOINT_VARS = ("EDGESWEEP_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")

#: What :func:`resolve_root` accepts, as its refusal message lists it.
ACCEPTED = ("a local path", "file:///absolute/path", "s3://bucket/prefix",
            "gs://bucket/prefix (where pyarrow has GCS support)")

#: Below this much free space on a local root, ``run`` warns and ``status`` says so: a trial
#: that cannot seal its rows fails, and one that cannot write its end stays "running" in the
#: trials table (shown as interrupted once its worker is gone), so the cause must be said.
LOW_SPACE_BYTES = 256 * 2**20

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):")


def env_seconds(name: str, default: float | None) -> float | None:
    """A number of seconds ≥ 0 from the environment variable ``name``; ``default`` when it is
    unset or empty. Anything else (``abc``, ``-1``, ``nan``, which would make a deadline that
    never comes) is a StorageError naming the variable."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise StorageError(f"environment variable {name}={text!r}: expected a number of seconds ≥ 0", name)
    return value


def s3_endpoint() -> str | None:
    for var in ENDPOINT_VARS:
        value = os.environ.get(var)
        if value:
            return value
    return None


def s3_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def undecodable_name(exc: UnicodeDecodeError) -> str:
    """The path a listing could not decode, its bad bytes shown as U+FFFD."""
    return exc.object.decode("utf-8", "replace") if isinstance(exc.object, bytes) else "a name"


@dataclass
class Root:
    """A resolved storage root.

    ``base`` is the root as the pyarrow filesystem spells it (an absolute local path, or
    ``bucket/prefix``); ``uri()`` turns a filesystem path back into what Polars reads
    (the same local path, or ``s3://bucket/key`` / ``gs://bucket/key``). ``scheme`` is
    ``"file"``, ``"s3"`` or ``"gs"``.
    """

    text: str
    fs: pafs.FileSystem
    base: str
    is_s3: bool
    storage_options: dict | None = None
    scheme: str | None = None
    _made_dirs: set = field(default_factory=set, repr=False)

    def __post_init__(self):
        if self.scheme is None:
            self.scheme = "s3" if self.is_s3 else "file"

    @property
    def is_object_store(self) -> bool:
        return self.scheme != "file"

    def with_base(self, base: str) -> "Root":
        """The same filesystem rooted at another folder (``base`` spelled as ``self.base`` is)."""
        text = f"{self.scheme}://{base}" if self.is_object_store else base
        return Root(text, self.fs, base, self.is_s3, self.storage_options, scheme=self.scheme)

    def path(self, *parts: str) -> str:
        return "/".join([self.base.rstrip("/")] + [p.strip("/") for p in parts if p])

    def uri(self, path: str) -> str:
        return f"{self.scheme}://{path}" if self.is_object_store else path

    def display(self, path: str) -> str:
        """How a path is shown in messages: the URI a user can paste."""
        return self.uri(path)

    def free_bytes(self) -> int | None:
        """Free space for this root's files (bytes an unprivileged writer may use); None for an
        object store, which has no such limit to report, or where it cannot be asked."""
        if self.is_object_store:
            return None
        d = Path(self.base)
        try:
            while not d.exists() and d != d.parent:  # a root not created yet: the disk it will be on
                d = d.parent
            return shutil.disk_usage(d).free
        except OSError:  # (exists() raises on a folder it may not search, in Python 3.11)
            return None

    def low_space(self, below: int = LOW_SPACE_BYTES) -> str | None:
        """``"<root>: only N MiB free on its disk"`` when a local root has less than ``below``
        bytes free, else None."""
        free = self.free_bytes()
        if free is None or free >= below:
            return None
        size = f"{free / 2**20:.0f} MiB" if free >= 2**20 else f"{free // 1024} KiB"
        return f"{self.display(self.base)}: only {size} free on its disk"

    # -- queries -----------------------------------------------------------------------------
    def info(self, path: str) -> pafs.FileInfo:
        try:
            return self._retrying(lambda: self.fs.get_file_info(path), path, "stat")
        except OSError as exc:
            raise StorageError(f"{self.display(path)}: cannot stat: {exc}", self.display(path)) from exc

    def is_dir(self, path: str) -> bool:
        return self.info(path).type == pafs.FileType.Directory

    def exists(self, path: str) -> bool:
        return self.info(path).type != pafs.FileType.NotFound

    def list_dirs(self, path: str) -> list[str]:
        """Names of the immediate sub-directories of `path` (sorted)."""
        sel = pafs.FileSelector(path, recursive=False, allow_not_found=True)
        return sorted(i.base_name for i in self._list(sel) if i.type == pafs.FileType.Directory)

    def list_files(self, path: str, recursive: bool = True) -> list[pafs.FileInfo]:
        """Every file below `path`, recursively unless not `recursive` (sorted by path); [] when
        `path` is absent."""
        sel = pafs.FileSelector(path, recursive=recursive, allow_not_found=True)
        return sorted((i for i in self._list(sel) if i.type == pafs.FileType.File),
                      key=lambda i: i.path)

    def list_files_around_denied(self, path: str) -> tuple[list[pafs.FileInfo], list[StorageError]]:
        """:meth:`list_files`, except that a local sub-folder that cannot be listed (no
        permission) is left out and returned as its error instead of ending the whole listing —
        so that an integrity check reports that folder and still checks the rest. An object
        store's listing is one request, so its failure is still raised, as is `path`'s own."""
        try:
            return self.list_files(path), []
        except StorageError:
            if self.is_object_store:
                raise
        files: list[pafs.FileInfo] = []
        denied: list[StorageError] = []
        folders = [path]
        while folders:
            folder = folders.pop()
            try:
                infos = self._list(pafs.FileSelector(folder, recursive=False, allow_not_found=True))
            except StorageError as exc:
                if folder == path:
                    raise
                denied.append(exc)
                continue
            files += (i for i in infos if i.type == pafs.FileType.File)
            folders += (i.path for i in infos if i.type == pafs.FileType.Directory)
        return sorted(files, key=lambda i: i.path), denied

    def _list(self, sel: pafs.FileSelector) -> list[pafs.FileInfo]:
        try:
            infos = self._retrying(lambda: self.fs.get_file_info(sel), sel.base_dir, "list")
            for i in infos:
                i.path  # noqa: B018 -- decoded when read: fail here, naming the folder, not in a caller
            return infos
        except OSError as exc:
            raise StorageError(f"{self.display(sel.base_dir)}: cannot list: {exc}",
                               self.display(sel.base_dir)) from exc
        except UnicodeDecodeError as exc:  # a file or folder name that is not UTF-8 (pyarrow decodes them)
            raise StorageError(f"{self.display(sel.base_dir)}: cannot list: {undecodable_name(exc)!r} is not a "
                               "UTF-8 name; rename or remove it", self.display(sel.base_dir)) from exc

    def read_bytes(self, path: str) -> bytes:
        """The whole file (a StorageError naming it when it cannot be read)."""
        def read() -> bytes:
            with self.fs.open_input_file(path) as f:
                return f.read()

        try:
            return self._retrying(read, path, "read")
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"{self.display(path)}: cannot read: {exc}", self.display(path)) from exc

    # -- writes ------------------------------------------------------------------------------
    def write_parquet(self, path: str, table: pa.Table, *, row_group_size: int | None = None,
                      compression: str = "zstd") -> str:
        """Seal `table` as a complete Parquet file at `path`, atomically (see module docstring).

        Replaces an existing file of the same name atomically. Returns `path`.
        """
        return self.write_bytes(path, parquet_bytes(table, row_group_size=row_group_size,
                                                     compression=compression))

    def write_bytes(self, path: str, data: bytes) -> str:
        """Seal a whole file (a Parquet file's bytes, a report, a JSON record) atomically;
        a failure raises a :class:`StorageError` naming `path` and leaves no partial file."""
        try:
            if self.is_object_store:
                self._retrying(lambda: self._seal_object(path, data), path, "write")
            else:
                self._seal_local(path, data)
        except OSError as exc:
            raise StorageError(f"{self.display(path)}: cannot write: {exc}", self.display(path)) from exc
        return path

    def _retrying(self, request, path: str, what: str):
        """An object store that restarts, throttles or drops a connection fails requests for
        a while. Every request here is idempotent (a seal writes a fresh temp object each time
        and the final name last; stat, list, read and delete change nothing or the same thing),
        so on an object store it is retried with backoff for up to ``EDGESWEEP_STORAGE_RETRY_S``
        seconds (default 120) before the error reaches the trial. A missing file is an answer,
        not a failure: it is never retried. Local files are not retried."""
        if not self.is_object_store:
            return request()
        budget = env_seconds("EDGESWEEP_STORAGE_RETRY_S", 120.0)
        deadline, wait = time.monotonic() + budget, 0.5
        while True:
            try:
                return request()
            except FileNotFoundError:
                raise
            except OSError as exc:
                if time.monotonic() + wait > deadline:
                    raise
                warnings.warn(f"{self.display(path)}: {what} failed ({exc}); retrying in {wait:g} s",
                              StorageWarning, stacklevel=4)
                time.sleep(wait)
                wait = min(2 * wait, 8.0)

    def _seal_local(self, path: str, data: bytes) -> None:
        parent, _, name = path.rpartition("/")
        self._mkdirs(parent)
        tmp = f"{parent}/{temp_name(name)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _fsync_dir(parent)

    def _seal_object(self, path: str, data: bytes) -> None:
        self._ensure_bucket(path)
        parent, _, name = path.rpartition("/")
        tmp = f"{parent}/{temp_name(name)}"
        out = self.fs.open_output_stream(tmp)
        try:
            out.write(data)
            out.close()
            # Trust the size the server reports, not only the absence of an error (pyarrow has
            # had upload errors that close() did not report: apache/arrow GH-44334).
            size = self.fs.get_file_info(tmp).size
            if size != len(data):
                raise OSError(f"the server holds {size} of the {len(data)} bytes uploaded")
            self.fs.move(tmp, path)
        except BaseException:
            # Closing publishes whatever part of the upload was sent — under the temp name,
            # which no reader lists; then remove it. The final name was never written.
            try:
                out.close()
            except (OSError, pa.ArrowException):
                pass
            try:
                self.fs.delete_file(tmp)
            except OSError:
                pass
            raise

    def delete(self, path: str) -> None:
        """Remove a file (absent is fine). Not fsynced: a deletion that a power cut undoes only
        resurrects a file that a compacted file supersedes, which readers ignore."""
        try:
            self._retrying(lambda: self.fs.delete_file(path), path, "delete")
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"{self.display(path)}: cannot delete: {exc}", self.display(path)) from exc

    def _mkdirs(self, directory: str) -> None:
        if directory in self._made_dirs:
            return
        # Create and fsync each new level so a power cut cannot lose a directory entry of a
        # sealed file (a SIGKILL alone never can: the page cache survives the process).
        missing = []
        d = Path(directory)
        while not d.exists():
            missing.append(d)
            d = d.parent
        for m in reversed(missing):
            try:
                m.mkdir()
            except FileExistsError:
                pass
            _fsync_dir(str(m.parent))
        self._made_dirs.add(directory)

    def _ensure_bucket(self, path: str) -> None:
        bucket = path.split("/", 1)[0]
        if bucket in self._made_dirs or not self.is_s3:
            return
        if self.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            self.fs.create_dir(bucket)
        self._made_dirs.add(bucket)


def parquet_bytes(table: pa.Table, *, row_group_size: int | None = None,
                  compression: str = "zstd") -> bytes:
    """`table` as a complete Parquet file in memory: zstd, row-group statistics, and a CRC-32
    checksum in every page header, which pyarrow verifies on read when asked
    (``page_checksum_verification=True``; every edgesweep read with pyarrow asks)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size, compression=compression,
                   write_statistics=True, write_page_checksum=True)
    return buf.getvalue()


def arrow_owned(data: bytes) -> pa.Buffer:
    """`data` copied into Arrow's own memory, for Arrow to read. A buffer that wraps Python
    bytes (``pa.BufferReader(data)``) needs the GIL when its last reference goes; Arrow's worker
    threads can drop that reference a moment after a read returns (the finished task's closure),
    and if the interpreter is finalizing by then, the thread is torn down inside C++ and the
    process aborts ("terminate called without an active exception", exit -6): seen at the end of
    ``verify``, about 1 run in 150 on a loaded 2-core machine. Memory Arrow owns is released
    without Python."""
    out = pa.BufferOutputStream()
    out.write(data)
    return out.getvalue()


def read_parquet_bytes(data: bytes) -> pa.Table:
    """A whole Parquet file from memory, every page's checksum verified (pages written
    without one pass). Through ``ParquetFile``, not ``pq.read_table``: the latter's dataset
    machinery can drop its last reference to the Python buffer from a worker thread during
    interpreter shutdown, which aborts the process ("terminate called without an active
    exception", ~8 % of runs here with pyarrow 26); and from memory Arrow owns (arrow_owned),
    because ``ParquetFile.read``'s threads can do the same, more rarely."""
    return read_parquet_buffer(arrow_owned(data))


def read_parquet_buffer(buf: pa.Buffer) -> pa.Table:
    """read_parquet_bytes for a buffer already copied by arrow_owned (no second copy)."""
    with pq.ParquetFile(pa.BufferReader(buf), page_checksum_verification=True) as f:
        return f.read()


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _refuse(text: str, why: str = "unsupported storage root") -> StorageError:
    return StorageError(f"{text}: {why}; accepted: {', '.join(ACCEPTED)}", text)


def resolve_root(root: "str | os.PathLike | Root") -> Root:
    """Turn a root (local path, ``file:`` URI, ``s3://bucket/prefix``, ``gs://bucket/prefix``)
    into a :class:`Root`; anything else is a :class:`StorageError` listing what is accepted."""
    if isinstance(root, Root):
        return root
    text = os.fspath(root)
    m = _SCHEME.match(text)
    if m is None:
        expanded = os.path.expanduser(text)
        if text.startswith("~") and expanded == text:
            # Path.expanduser would raise; os.path's would make a folder literally named "~…"
            raise StorageError(f"{text}: cannot expand {text.split('/', 1)[0]!r} (no such user, or no home "
                               "directory)", text)
        return Root(text, pafs.LocalFileSystem(), os.path.abspath(expanded), False)
    scheme = m["scheme"]
    if scheme == "file":
        uri = text
        if uri.startswith("file://localhost/"):  # RFC 8089: the same as file:///…
            uri = "file://" + uri[len("file://localhost"):]
        try:
            fs, path = pafs.FileSystem.from_uri(uri)
        except (pa.ArrowInvalid, ValueError) as exc:
            raise _refuse(text, f"not a local file URI ({exc})") from exc
        return Root(text, fs, os.path.abspath(path), False)
    if scheme in ("s3", "gs") and text.startswith(f"{scheme}://"):
        rest = text[len(scheme) + 3:].strip("/")
        if text.startswith(f"{scheme}:///"):
            # Not a bucket named after the prefix: an empty bucket name (a template variable left empty?)
            raise StorageError(f"{text}: an {scheme} root needs a bucket between '{scheme}://' and the "
                               f"prefix ({scheme}://bucket/prefix)", text)
        if not rest:
            raise StorageError(f"{text}: an {scheme} root needs a bucket ({scheme}://bucket/prefix)", text)
        return _s3_root(text, rest) if scheme == "s3" else _gs_root(text, rest)
    if scheme in ("s3", "gs"):
        raise _refuse(text, f"malformed {scheme} URI (write {scheme}://bucket/prefix; did "
                            f"something like pathlib.Path collapse its '//'?)")
    if scheme.lower() in ("s3", "gs", "file"):
        raise _refuse(text, "URI schemes are lower-case")
    raise _refuse(text, "unsupported storage root (for a local path with a ':' in its first "
                        "component, write ./" + text + ")")


def _s3_root(text: str, rest: str) -> Root:
    endpoint = s3_endpoint()
    region = s3_region()
    kwargs = {"region": region, "allow_bucket_creation": True}
    opts = {"aws_region": region}
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        opts["aws_endpoint_url"] = endpoint
        if endpoint.startswith("http://"):
            opts["aws_allow_http"] = "true"
    return Root(text, pafs.S3FileSystem(**kwargs), rest, True, opts, scheme="s3")


def _gs_root(text: str, rest: str) -> Root:
    gcs = getattr(pafs, "GcsFileSystem", None)
    if gcs is None:
        raise _refuse(text, "this pyarrow has no GCS support")
    return Root(text, gcs(), rest, False, None, scheme="gs")
