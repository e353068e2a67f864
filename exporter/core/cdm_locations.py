"""Where a CDM partition's data is: a `location` from model.json (an Azure, Azurite, ABFS or
WASB URL, or a path relative to the manifest) resolved to a blob name in our container.

Resolution refuses, never repairs: a location outside this app's account, outside the
container, outside the manifest's folder, or that is not a safe blob name is an error, so a
model.json can make the app read only what its own folder holds. Pure: no Azure, no network.
"""

from __future__ import annotations

import posixpath
from urllib.parse import urlsplit, urlunsplit

from exporter.core import paths


class LocationError(ValueError):
    """A partition location that does not name a file in the manifest's folder of our container
    (`exporter.core.cdm` reports it as the partition's `ManifestError`)."""


def blob_of(location: str, *, manifest: str, container: str, account: str | None) -> str:
    """The blob a partition location names in our container, inside the manifest's folder.
    Absolute URLs may be Azure's (`https://<account>.blob|dfs.core.windows.net/<container>/
    <blob>`), path-style like Azurite's (`http://127.0.0.1:10000/<account>/<container>/<blob>`)
    or ABFS/WASB (`abfss://<container>@<account>.dfs.core.windows.net/<blob>`); a location
    without a scheme is relative to the manifest's folder. The path is percent-decoded until it
    stops changing (`exporter.core.paths`), and the blob name is refused, never repaired, when it
    could leave the container or the folder (`..`, `.`, empty segments, backslashes, control
    characters, over 1,024 characters). A SAS token in the URL is dropped, and never shown."""
    parts = urlsplit(location.strip())
    scheme = parts.scheme.lower()
    netloc = parts.netloc.rpartition("@")[2] if scheme in ("http", "https") else parts.netloc
    where = f"location {paths.shown(urlunsplit((parts.scheme, netloc, parts.path, '', '')))}"
    try:
        path = paths.decode(parts.path)
    except paths.PathError as exc:
        raise LocationError(f"{where}: its path {exc}") from None
    if not scheme:
        if parts.netloc:
            raise LocationError(f"{where} is not a URL or a relative path")
        if path.startswith("/"):
            raise LocationError(
                f"{where} is an absolute path: a relative location is read from the "
                "model.json's folder"
            )
        return _checked_blob(f"{_folder(manifest)}/{path}", where, manifest, container)
    if scheme in ("http", "https"):
        labels = (parts.hostname or "").lower().split(".")
        rest = path.removeprefix("/")
        if len(labels) > 2 and labels[1] in ("blob", "dfs"):
            url_account = labels[0]
        else:  # path-style: the account is the first path segment (Azurite, the emulator)
            url_account, _, rest = rest.partition("/")
        url_container, _, blob = rest.partition("/")
    elif scheme in ("abfs", "abfss", "wasb", "wasbs"):
        url_container, _, host = parts.netloc.partition("@")
        url_account, blob = host.split(".", 1)[0].lower(), path.removeprefix("/")
    else:
        raise LocationError(f"{where}: {parts.scheme!r} URLs are not supported")
    if account and url_account.lower() != account.lower():
        raise LocationError(
            f"{where} is in storage account {paths.shown(url_account, 64)}, not in this app's "
            f"account {account!r}"
        )
    if url_container != container:
        raise LocationError(
            f"{where} is in container {paths.shown(url_container, 64)}, not in "
            f"{container!r}: partitions are read only from the {container} container"
        )
    return _checked_blob(blob, where, manifest, container)


def _folder(manifest: str) -> str:
    """The CDM folder a model.json describes: the blob name's folder."""
    return posixpath.dirname(manifest)


def _checked_blob(blob: str, where: str, manifest: str, container: str) -> str:
    """The blob, if it is a file inside the manifest's folder of `container`."""
    if not blob or blob.endswith("/"):
        raise LocationError(f"{where} names a folder, not a file")
    problem = paths.name_problem(blob)
    if problem:
        raise LocationError(
            f"{where} is not a safe blob name in the {container} container: {problem}; "
            "it was not read"
        )
    folder = _folder(manifest)
    if not blob.startswith(f"{folder}/"):
        raise LocationError(
            f"{where} is outside the model.json's folder {folder}/: partitions are read only "
            "from the CDM folder that lists them"
        )
    if blob == manifest:
        raise LocationError(f"{where} is the model.json itself")
    return blob
