"""File transfer between hearthd and the guest, over the agent channel.

An upload is FILE_WRITE_BEGIN {path}, any number of FILE_DATA frames, then FILE_WRITE_END
{commit}. The bytes go to a temporary file beside the target, which is renamed over the
target only on a committed end, so an aborted or failed upload never leaves a partial file.
A download is FILE_READ {path}, answered by FILE_META {size}, FILE_DATA frames and FILE_DONE.
Every failure is an ERROR frame with a stable code.
"""

import json
import os
import stat
import threading

import protocol

CHUNK_BYTES = 256 * 1024
# How much of a file that reports no size (as /proc files do) a download reads.
MAX_UNSIZED_BYTES = 16 * 1024 * 1024
# A listing larger than either limit is cut short, so that its answer fits in one frame.
MAX_LIST_ENTRIES = 5000
MAX_LIST_NAME_BYTES = 4 << 20


class FileError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def check_path(path):
    """Rejects paths that are relative, contain NUL, or step up with "..".

    The guest's root is the VM's own filesystem, so a symlink that leads elsewhere inside it
    is fine; the check only keeps requests unambiguous.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise FileError("invalid_path", f"the path {path!r} is not absolute")
    if "\0" in path:
        raise FileError("invalid_path", "the path contains a NUL byte")
    if ".." in path.split("/"):
        raise FileError("invalid_path", f"the path {path!r} contains a '..' segment")
    return path


def os_error(error, path):
    if isinstance(error, FileNotFoundError):
        return FileError("file_not_found", f"{path} does not exist in the VM")
    if isinstance(error, IsADirectoryError):
        return FileError("not_a_file", f"{path} is a directory")
    if isinstance(error, NotADirectoryError):
        return FileError("not_a_directory", f"a parent of {path} is not a directory")
    if error.errno == 28:  # ENOSPC
        return FileError("disk_full", f"the session's disk is full while writing {path}")
    if error.errno == 36:  # ENAMETOOLONG
        return FileError("invalid_path", f"a name in {path} is longer than 255 bytes")
    return FileError("file_error", f"{path}: {error.strerror}")


class Upload:
    def __init__(self, path):
        self.path = check_path(path)
        directory = os.path.dirname(path) or "/"
        try:
            os.makedirs(directory, exist_ok=True)
            if os.path.isdir(path):
                raise IsADirectoryError(21, "Is a directory")
            self.temp_path = os.path.join(
                directory, f".hearth-upload-{os.getpid()}-{threading.get_ident()}-{id(self)}"
            )
            self.fd = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as error:
            raise os_error(error, path) from error
        self.size = 0

    def write(self, data):
        try:
            view = memoryview(data)
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
            self.size += len(data)
        except OSError as error:
            self.abort()
            raise os_error(error, self.path) from error

    def finish(self, commit):
        try:
            os.close(self.fd)
            if commit:
                os.rename(self.temp_path, self.path)
                return
        except OSError as error:
            self.abort()
            raise os_error(error, self.path) from error
        self.abort()

    def abort(self):
        try:
            os.close(self.fd)
        except OSError:
            pass
        try:
            os.unlink(self.temp_path)
        except OSError:
            pass


class FileService:
    """Keeps uploads in flight by call id and answers reads and listings."""

    def __init__(self, send, send_json):
        self.send = send
        self.send_json = send_json
        self.uploads = {}
        self.failed_uploads = set()
        # Call ids of downloads in progress, and of those the host has cancelled.
        self.reads = set()
        self.cancelled_reads = set()
        # Chunks each download may still send before the host grants more. Downloads wait
        # for credit on their own, so a slow reader never holds up the channel.
        self.credits = {}
        self.credit_changed = threading.Condition()

    def error(self, call_id, error):
        self.send_json(protocol.ERROR, call_id, {"code": error.code, "message": str(error)})

    def begin_upload(self, call_id, payload):
        try:
            self.uploads[call_id] = Upload(json.loads(payload).get("path"))
        except FileError as error:
            self.failed_uploads.add(call_id)
            self.error(call_id, error)

    def upload_data(self, call_id, payload):
        upload = self.uploads.get(call_id)
        if upload is None:
            return  # the upload already failed and was reported
        try:
            upload.write(payload)
        except FileError as error:
            del self.uploads[call_id]
            self.failed_uploads.add(call_id)
            self.error(call_id, error)

    def end_upload(self, call_id, payload):
        upload = self.uploads.pop(call_id, None)
        if upload is None:
            self.failed_uploads.discard(call_id)
            return
        commit = bool(json.loads(payload or b"{}").get("commit", True))
        try:
            upload.finish(commit)
        except FileError as error:
            self.error(call_id, error)
            return
        self.send_json(protocol.FILE_DONE, call_id, {"path": upload.path, "size": upload.size})

    def read(self, call_id, payload):
        self.reads.add(call_id)
        threading.Thread(target=self._read, args=(call_id, payload), daemon=True).start()

    def grant(self, call_id, payload):
        """Lets a download send more chunks, as the host's reader takes them."""
        chunks = json.loads(payload).get("chunks")
        if not isinstance(chunks, int) or chunks < 1:
            return
        with self.credit_changed:
            if call_id in self.credits:
                self.credits[call_id] += chunks
                self.credit_changed.notify_all()

    def cancel(self, call_id):
        """Stops a download whose reader on the host has gone. Other call ids are ignored."""
        if call_id in self.reads:
            self.cancelled_reads.add(call_id)
            with self.credit_changed:
                self.credit_changed.notify_all()

    def take_credit(self, call_id):
        """Waits until the download may send a chunk. Returns False once it is cancelled."""
        with self.credit_changed:
            while self.credits[call_id] < 1 and call_id not in self.cancelled_reads:
                self.credit_changed.wait()
            if call_id in self.cancelled_reads:
                return False
            self.credits[call_id] -= 1
            return True

    def _read(self, call_id, payload):
        path = None
        try:
            request = json.loads(payload)
            window = request.get("window_chunks")
            with self.credit_changed:
                self.credits[call_id] = window if isinstance(window, int) and window > 0 else 1
            path = check_path(request.get("path"))
            info = os.stat(path)
            if stat.S_ISDIR(info.st_mode):
                raise IsADirectoryError(21, "Is a directory")
            if not stat.S_ISREG(info.st_mode):
                # Devices and pipes may never end, so only regular files are sent.
                raise FileError("not_a_file", f"{path} is not a regular file")
            if info.st_size == 0:
                # Files in /proc and /sys report no size, so they are read whole first: the
                # size sent is then the real one, and a read error comes before any data.
                contents = read_unsized(path)
                offsets = range(0, len(contents), CHUNK_BYTES)
                chunks = (contents[offset : offset + CHUNK_BYTES] for offset in offsets)
                size = self.send_chunks(call_id, len(contents), chunks)
            else:
                with open(path, "rb") as source:
                    chunks = iter(lambda: source.read(CHUNK_BYTES), b"")
                    size = self.send_chunks(call_id, info.st_size, chunks)
            if size is None:
                return  # the host dropped this call, so its frames would be discarded
            self.send_json(protocol.FILE_DONE, call_id, {"path": path, "size": size})
        except FileError as error:
            self.error(call_id, error)
        except OSError as error:
            self.error(call_id, os_error(error, path))
        finally:
            self.reads.discard(call_id)
            self.cancelled_reads.discard(call_id)
            with self.credit_changed:
                self.credits.pop(call_id, None)

    def send_chunks(self, call_id, size, chunks):
        """Sends the file's size, then its chunks as credit allows. Returns the bytes sent,
        or None when the host cancelled the download."""
        self.send_json(protocol.FILE_META, call_id, {"size": size})
        sent = 0
        for chunk in chunks:
            if not self.take_credit(call_id):
                return None
            sent += len(chunk)
            self.send(protocol.FILE_DATA, call_id, chunk)
        return sent

    def list(self, call_id, payload):
        path = None
        try:
            path = check_path(json.loads(payload).get("path"))
            if os.path.exists(path) and not os.path.isdir(path):
                raise FileError("not_a_directory", f"{path} is not a directory")
            entries = []
            truncated = False
            name_bytes = 0
            with os.scandir(path) as listing:
                for entry in listing:
                    name_bytes += len(entry.name.encode(errors="surrogateescape"))
                    if len(entries) >= MAX_LIST_ENTRIES or name_bytes > MAX_LIST_NAME_BYTES:
                        truncated = True
                        break
                    entries.append(describe_entry(entry))
            entries.sort(key=lambda item: item["name"])
            self.send_json(
                protocol.FILE_DONE,
                call_id,
                {"path": path, "entries": entries, "truncated": truncated},
            )
        except FileError as error:
            self.error(call_id, error)
        except OSError as error:
            self.error(call_id, os_error(error, path))


def read_unsized(path):
    """Reads a file that reports no size, up to MAX_UNSIZED_BYTES. The file is opened
    non-blocking, so one that waits for data, such as /proc/kmsg, ends where it has none."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    parts = []
    total = 0
    try:
        while True:
            try:
                part = os.read(fd, CHUNK_BYTES)
            except BlockingIOError:
                break
            if not part:
                break
            total += len(part)
            if total > MAX_UNSIZED_BYTES:
                raise FileError(
                    "file_too_large",
                    f"{path} reports no size and has over {MAX_UNSIZED_BYTES} bytes",
                )
            parts.append(part)
    finally:
        os.close(fd)
    return b"".join(parts)


def describe_entry(entry):
    info = entry.stat(follow_symlinks=False)
    if stat.S_ISLNK(info.st_mode):
        kind = "symlink"
    elif stat.S_ISDIR(info.st_mode):
        kind = "directory"
    elif stat.S_ISREG(info.st_mode):
        kind = "file"
    else:
        kind = "other"
    return {
        "name": entry.name,
        "type": kind,
        "size": info.st_size,
        "mode": stat.S_IMODE(info.st_mode),
        "mtime_ns": info.st_mtime_ns,
    }
