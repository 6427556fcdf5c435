"""Storage roots: a local directory or ``s3://bucket/prefix``, behind one small interface.

Everything goes through :class:`pyarrow.fs.FileSystem` (local or S3), so writer, compactor and
scanner have one code path; only sealing differs:

* local: write to a hidden temp name in the target directory, ``fsync`` the file, ``rename``
  it over the final name (atomic on POSIX), ``fsync`` the directory. A SIGKILL at any moment
  leaves either no final file or a complete one; at worst a hidden temp file remains, which
  no reader lists.
* S3: an object becomes visible only when its upload completes, and there is no rename. The
  file is serialised completely in memory first, then sent as one object (one PUT for small
  files, a multipart upload that completes only at the end for large ones). A killed
  process leaves no object, or an incomplete multipart upload that is invisible to listings.

S3 configuration comes from the environment only: the endpoint from ``EDGESWEEP_S3_ENDPOINT``
(else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``; unset means AWS), the region from
``AWS_REGION`` / ``AWS_DEFAULT_REGION``, credentials from the standard AWS chain (env vars,
``~/.aws`` files, instance metadata) — resolved by pyarrow and by Polars, never passed through
edgesweep's own objects, so they cannot end up in a table, a log line or a report.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import StorageError
from .layout import temp_name

ENDPOINT_VARS = ("EDGESWEEP_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def s3_endpoint() -> str | None:
    for var in ENDPOINT_VARS:
        value = os.environ.get(var)
        if value:
            return value
    return None


def s3_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


@dataclass
class Root:
    """A resolved storage root.

    ``base`` is the root as the pyarrow filesystem spells it (an absolute local path, or
    ``bucket/prefix``); ``uri()`` turns a filesystem path back into what Polars reads
    (the same local path, or ``s3://bucket/key``).
    """

    text: str
    fs: pafs.FileSystem
    base: str
    is_s3: bool
    storage_options: dict | None = None
    _made_dirs: set = field(default_factory=set, repr=False)

    def path(self, *parts: str) -> str:
        return "/".join([self.base.rstrip("/")] + [p.strip("/") for p in parts if p])

    def uri(self, path: str) -> str:
        return f"s3://{path}" if self.is_s3 else path

    def display(self, path: str) -> str:
        """How a path is shown in messages: the URI a user can paste."""
        return self.uri(path)

    # -- queries -----------------------------------------------------------------------------
    def info(self, path: str) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(path)
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

    def list_files(self, path: str) -> list[pafs.FileInfo]:
        """Every file below `path`, recursively (sorted by path); [] when `path` is absent."""
        sel = pafs.FileSelector(path, recursive=True, allow_not_found=True)
        return sorted((i for i in self._list(sel) if i.type == pafs.FileType.File),
                      key=lambda i: i.path)

    def _list(self, sel: pafs.FileSelector) -> list[pafs.FileInfo]:
        try:
            return self.fs.get_file_info(sel)
        except OSError as exc:
            raise StorageError(f"{self.display(sel.base_dir)}: cannot list: {exc}",
                               self.display(sel.base_dir)) from exc

    # -- writes ------------------------------------------------------------------------------
    def write_parquet(self, path: str, table: pa.Table, *, row_group_size: int | None = None,
                      compression: str = "zstd") -> str:
        """Seal `table` as a complete Parquet file at `path`, atomically (see module docstring).

        Replaces an existing file of the same name atomically. Returns `path`.
        """
        def write(f):
            pq.write_table(table, f, row_group_size=row_group_size, compression=compression,
                           write_statistics=True)
        return self._seal(path, write)

    def write_bytes(self, path: str, data: bytes) -> str:
        """Write a small whole file (a report, a JSON summary) with the same atomicity."""
        return self._seal(path, lambda f: f.write(data))

    def _seal(self, path: str, write) -> str:
        parent, _, name = path.rpartition("/")
        if self.is_s3:
            buf = io.BytesIO()
            write(buf)
            data = buf.getbuffer()
            self._ensure_bucket(path)
            out = self.fs.open_output_stream(path)
            # One write of the complete bytes; the object appears when close() completes the
            # upload. An exception before close leaves no object.
            out.write(data)
            out.close()
            return path
        self._mkdirs(parent)
        tmp = f"{parent}/{temp_name(name)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
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
        return path

    def delete(self, path: str) -> None:
        """Remove a file (absent is fine). Not fsynced: a deletion that a power cut undoes only
        resurrects a file that a compacted file supersedes, which readers ignore."""
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass

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
        if bucket in self._made_dirs:
            return
        if self.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            self.fs.create_dir(bucket)
        self._made_dirs.add(bucket)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def resolve_root(root: "str | os.PathLike | Root") -> Root:
    """Turn a root string (local path, ``file://`` URI or ``s3://bucket/prefix``) into a :class:`Root`."""
    if isinstance(root, Root):
        return root
    text = os.fspath(root)
    if text.startswith("s3://"):
        rest = text[len("s3://"):].strip("/")
        if not rest:
            raise StorageError(f"{text}: an s3 root needs a bucket (s3://bucket/prefix)", text)
        endpoint = s3_endpoint()
        region = s3_region()
        kwargs = {"region": region, "allow_bucket_creation": True}
        opts = {"aws_region": region}
        if endpoint:
            kwargs["endpoint_override"] = endpoint
            opts["aws_endpoint_url"] = endpoint
            if endpoint.startswith("http://"):
                opts["aws_allow_http"] = "true"
        fs = pafs.S3FileSystem(**kwargs)
        return Root(text, fs, rest, True, opts)
    if "://" in text and not text.startswith("file://"):
        raise StorageError(f"{text}: unsupported storage root (use a local path or s3://bucket/prefix)", text)
    if text.startswith("file://"):
        text = text[len("file://"):]
    base = os.path.abspath(os.path.expanduser(text))
    return Root(text, pafs.LocalFileSystem(), base, False, None)
