"""Fetching a file once: the cache folder, md5 checksums, and an atomic download.

minires.cifar10 uses this for the CIFAR-10 archive, but nothing here knows about CIFAR-10. A
download goes to a temporary file next to its destination and is renamed into place (os.replace,
atomic on one file system) only after its md5 matched, so an interrupted or wrong download never
leaves a file that looks complete: a corrupt archive would otherwise fail much later, or not at
all.
"""

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

CHUNK = 1 << 20  # read and hash 1 MiB at a time: a 173 MB archive never sits in memory
# What urllib raises when the network or the server fails (URLError includes HTTPError).
NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError)


class DownloadError(OSError):
    """A download that failed: no network, an HTTP error, or a file whose md5 is wrong."""


def cache_dir():
    """Where downloads are kept: $MINIRES_DATA if set, else ~/.cache/minires (not created here)."""
    return Path(os.environ.get("MINIRES_DATA") or Path.home() / ".cache" / "minires")


def md5sum(path):
    """The md5 of a file as 32 hex digits, read in chunks (about 0.5 s for 173 MB)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url, dest, md5):
    """Download url to dest with a progress bar; keep it only if its md5 is `md5`.

    Raises DownloadError when the URL cannot be reached or the md5 differs; either way nothing is
    left behind (neither dest nor the temporary file).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A download that was killed (not one that failed: that cleans up below) left its part file.
    for stale in dest.parent.glob(dest.name + ".*.part"):
        stale.unlink(missing_ok=True)
    # The temporary file lives in dest's folder so that os.replace below is a rename, not a copy.
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        digest = hashlib.md5()
        try:
            with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as response:
                size = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=size, unit="B", unit_scale=True, desc=dest.name) as bar:
                    while chunk := response.read(CHUNK):
                        f.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
        except NETWORK_ERRORS as e:
            # URLError wraps the real cause in .reason; HTTPError's own text has the status code.
            reason = e if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", e)
            raise DownloadError(f"could not download {url}: {reason}") from e
        if digest.hexdigest() != md5:
            raise DownloadError(
                f"downloaded {url} but its md5 is {digest.hexdigest()}, expected {md5} "
                "(a truncated transfer or a changed file); nothing was saved"
            )
        os.replace(tmp, dest)
    finally:
        # After a successful os.replace the temporary name is gone; otherwise remove the part file.
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def cached_file(name, url, md5, download=True):
    """The file `name` in cache_dir(), checked against md5; downloaded from url if it is missing.

    Raises DownloadError when the cached file has another md5, when it is missing and download is
    False, or when the download fails.
    """
    path = cache_dir() / name
    if path.is_file():
        found = md5sum(path)
        if found != md5:
            raise DownloadError(
                f"{path}: md5 {found} is not the expected {md5}; delete the file so that it is "
                "downloaded again"
            )
        return path
    if not download:
        raise DownloadError(f"{path} does not exist and download=False")
    return download_file(url, path, md5)
