"""CDM folders (`model.json`), as Customer Insights' export to Azure Blob Storage writes them.

Customer Insights writes each entity's data as CSV partitions, without header rows, under
`<folder>/<Entity>/<yyyy>/<mm>/<dd>/<HHMM>/<Entity>_<n>.csv`, and rewrites `<folder>/model.json`
(entities, their attributes, and each partition's `location` URL and `fileFormatSettings`). Each
entity is one segment snapshot: its name is the segment, its attributes are the columns, its
partitions are read in order as one file.

This module only parses and checks: it turns a manifest's bytes into `Manifest` (entities that
can be exported, and why the others cannot), with each partition's blob in our `segments`
container (resolved by `exporter.core.cdm_locations`), and names an entity's snapshot. Reading
blobs is the storage adapter's job (`exporter.adapters.azure_storage`); what happens when a
manifest arrives is the flow's (`exporter.flow.cdm_folders`). No Azure imports, no network.
"""

from __future__ import annotations

import functools
import hashlib
import json
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Final

from exporter.core import paths
from exporter.core.cdm_locations import LocationError, blob_of
from exporter.core.errors import InputError
from exporter.core.snapshots.parts import Part, Parts

MANIFEST: Final = "model.json"
MAX_MANIFEST_BYTES: Final = 16 << 20
"""A model.json larger than this is refused: tens of thousands of partitions fit in far less."""
SEGMENTS: Final = "segments"
ENTITY_SEPARATOR: Final = "#"
"""Between the manifest's blob name and the entity's name in an entity snapshot's name."""

_CSV_FORMAT: Final = "CsvFormatSettings"
_QUOTE_STYLES: Final = {"quotestyle.csv": True, "quotestyle.none": False}
_CSV_STYLES: Final = {"csvstyle.quotealways", "csvstyle.quoteafterdelimiter"}
_UTF8: Final = {"utf-8", "utf8", "utf-8-bom", "65001", "ascii", "us-ascii"}
_NOT_CSV: Final = {".parquet": "Parquet", ".avro": "Avro", ".orc": "ORC"}
_MAX_LABEL: Final = 200
"""An entity name longer than this is not repeated in messages and logs: it is named by its
position (`#3`), and refused."""


class ManifestError(InputError):
    """A model.json that cannot be used at all, or an entity of it that cannot be exported."""


@dataclass(frozen=True, slots=True)
class CsvFormat:
    """How a partition is written (CDM's CsvFormatSettings; the defaults are CDM's)."""

    header: bool = False
    delimiter: str = ","
    quoting: bool = True


@dataclass(frozen=True, slots=True)
class Partition:
    """One data file of an entity: its name in model.json and its blob in `segments`."""

    name: str
    blob: str
    format: CsvFormat


@dataclass(frozen=True, slots=True)
class Entity:
    """An entity that can be exported: a segment, its columns, its partitions in order."""

    name: str
    attributes: tuple[str, ...]
    partitions: tuple[Partition, ...]


@dataclass(frozen=True, slots=True)
class Manifest:
    """A parsed model.json: the entities that can be exported, and why the others cannot."""

    name: str
    entities: tuple[Entity, ...]
    rejected: Mapping[str, str]
    """Entity name (or `#<position>` when it has none) -> why it cannot be exported."""

    def entity(self, name: str) -> Entity:
        for entity in self.entities:
            if entity.name == name:
                return entity
        reason = self.rejected.get(name, f"{self.name} does not list entity {name!r}")
        raise ManifestError(reason)


# --- names -----------------------------------------------------------------------------------


def is_manifest(blob: str) -> bool:
    """`<folder>/.../model.json` in the segments container (never at its root: a folder is one
    export, and the blob trigger watches `segments/{segment}/{name}`)."""
    return "/" in blob and blob.rsplit("/", 1)[1].lower() == MANIFEST


def entity_snapshot(manifest: str, entity: str) -> str:
    """The snapshot name of an entity: `ci/BlobExport/model.json#HighValue`."""
    return f"{manifest}{ENTITY_SEPARATOR}{entity}"


def split_entity_snapshot(name: str) -> tuple[str, str] | None:
    """(manifest blob, entity) for an entity's snapshot name; None for a snapshot file."""
    manifest, separator, entity = name.rpartition(ENTITY_SEPARATOR)
    if not separator or not entity or not is_manifest(manifest):
        return None
    return manifest, entity


def segment_name_problem(name: str) -> str | None:
    """Why an entity's name cannot be a segment's name, or None. Segment names become folder
    names, table keys and blob names (`state/<destination>/<segment>/...`, `cdm/<segment>.json`):
    letters, digits, `-` and `_`, 1 to 63 characters (`exporter.core.paths.valid_segment`)."""
    return paths.segment_problem(name)


def pinned_etag(manifest_etag: str, partitions: list[tuple[str, str]]) -> str:
    """The version of an entity's snapshot: the manifest's ETag and a digest of every partition's
    (blob, ETag), in order. The same folder always gives the same value (so the same run), and a
    partition replaced after the manifest was processed is noticed before it is read."""
    digest = hashlib.sha256("\n".join(f"{b}\t{e}" for b, e in partitions).encode()).hexdigest()
    return f"{manifest_etag};partitions={digest[:16]}"


def manifest_etag(entity_etag: str) -> str:
    """The manifest's own ETag inside an entity snapshot's version (see `pinned_etag`)."""
    return entity_etag.split(";partitions=", 1)[0]


# --- parsing ---------------------------------------------------------------------------------


def check_size(name: str, size: int) -> None:
    """Refuse a model.json over MAX_MANIFEST_BYTES before reading it."""
    if size > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"{name} is {size / (1 << 20):.1f} MiB; a model.json over "
            f"{MAX_MANIFEST_BYTES >> 20} MiB is not read"
        )


def parse_manifest(
    data: bytes, *, name: str, container: str = SEGMENTS, account: str | None = None
) -> Manifest:
    """Parse a model.json. A manifest that is unusable as a whole raises ManifestError; an entity
    that cannot be exported is listed in `rejected` with the reason, and the others go on.

    `name` is the manifest's blob name (relative partition locations resolve against its
    folder); `account`, when known, is the storage account partitions must be in.
    """
    check_size(name, len(data))
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"{name} is not UTF-8 text (byte {exc.start:,}); a CDM model.json is UTF-8 JSON"
        ) from None
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"{name} is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"{name} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{name} holds a JSON {_kind(doc)}, not a CDM model (an object)")
    entities = doc.get("entities")
    if not isinstance(entities, list) or not entities:
        raise ManifestError(f"{name} lists no entities: there is nothing to export")

    resolve = functools.partial(blob_of, manifest=name, container=container, account=account)
    parsed: dict[str, Entity] = {}
    rejected: dict[str, str] = {}
    for position, raw in enumerate(entities, start=1):
        label = _label(raw, position)
        if label in parsed or label in rejected:
            parsed.pop(label, None)
            rejected[label] = f"{name} lists entity {label!r} more than once"
            continue
        try:
            parsed[label] = _entity(raw, label, doc.get("fileFormatSettings"), resolve)
        except ManifestError as exc:
            rejected[label] = f"entity {label!r} of {name}: {exc}"
    return Manifest(name, tuple(parsed.values()), rejected)


def _label(raw: object, position: int) -> str:
    """How an entity is named in `rejected`, messages and logs: its name, or `#<position>` when
    it has none (or one too long to repeat)."""
    if isinstance(raw, dict) and isinstance(raw.get("name"), str) and raw["name"]:
        name = str(raw["name"])
        return name if len(name) <= _MAX_LABEL else f"#{position}"
    return f"#{position}"


def _entity(raw: object, label: str, model_format: object, resolve: Callable[[str], str]) -> Entity:
    if not isinstance(raw, dict):
        raise ManifestError(f"it is a JSON {_kind(raw)}, not an entity (an object)")
    kind = raw.get("$type", "LocalEntity")
    if kind == "ReferenceEntity":
        raise ManifestError(
            "it is a ReferenceEntity (its data is described by another model.json): "
            "only LocalEntity entities can be exported"
        )
    if kind != "LocalEntity":
        raise ManifestError(f"its $type {paths.shown(str(kind), 64)} is not LocalEntity")
    entity_name = raw.get("name")
    if not isinstance(entity_name, str) or not entity_name:
        raise ManifestError("it has no name")
    problem = segment_name_problem(entity_name)
    if problem:
        raise ManifestError(
            f"its name cannot be a segment name: {problem} (a segment name is 1 to "
            f"{paths.MAX_SEGMENT_NAME} letters, digits, '-' or '_')"
        )
    attributes = raw.get("attributes")
    if not isinstance(attributes, list) or not attributes:
        raise ManifestError("it has no attributes: model.json must list the entity's columns")
    names = []
    for position, attribute in enumerate(attributes, start=1):
        name = attribute.get("name") if isinstance(attribute, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise ManifestError(f"attribute {position} has no name")
        names.append(name)
    partitions = raw.get("partitions")
    if not isinstance(partitions, list) or not partitions:
        raise ManifestError("it has no partitions: model.json lists no data file for it")
    entity_format = raw.get("fileFormatSettings", model_format)
    files = []
    for position, part in enumerate(partitions, start=1):
        if not isinstance(part, dict):
            raise ManifestError(f"partition {position} is a JSON {_kind(part)}, not an object")
        part_name = str(part.get("name") or f"#{position}")
        location = part.get("location")
        if location is None:
            continue  # CDM: a partition without a location describes the schema only
        if not isinstance(location, str) or not location.strip():
            raise ManifestError(f"partition {paths.shown(part_name, 100)} has no location")
        try:
            blob = resolve(location)
            settings = part.get("fileFormatSettings", entity_format)
            files.append(Partition(part_name, blob, _csv_format(settings, blob)))
        except (ManifestError, LocationError) as exc:
            raise ManifestError(f"partition {paths.shown(part_name, 100)}: {exc}") from None
    if not files:
        raise ManifestError("none of its partitions has a location: there is no data to read")
    return Entity(label, tuple(names), tuple(files))


def _csv_format(settings: object, blob: str) -> CsvFormat:
    """CDM's CsvFormatSettings, with CDM's defaults (no header row, ',', QuoteStyle.Csv, UTF-8);
    anything this reader would get wrong is refused by name."""
    suffix = posixpath.splitext(blob.lower().removesuffix(".gz"))[1]
    if suffix in _NOT_CSV:
        raise ManifestError(f"it is a {_NOT_CSV[suffix]} file; only CSV partitions can be read")
    if settings is None:
        return CsvFormat()
    if not isinstance(settings, dict):
        raise ManifestError("its fileFormatSettings is not an object")
    kind = settings.get("$type", _CSV_FORMAT)
    if kind != _CSV_FORMAT:
        raise ManifestError(
            f"its file format {kind!r} is not supported: only CSV partitions "
            f"({_CSV_FORMAT}) can be read"
        )
    header = _boolean(settings.get("columnHeaders", False), "columnHeaders")
    delimiter = settings.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n':
        raise ManifestError(
            f"its delimiter {delimiter!r} is not supported: use one character "
            "(not a quote or a line break)"
        )
    quote_style = str(settings.get("quoteStyle", "QuoteStyle.Csv"))
    if quote_style.lower() not in _QUOTE_STYLES:
        raise ManifestError(
            f"its quoteStyle {quote_style!r} is not supported: QuoteStyle.Csv or QuoteStyle.None"
        )
    csv_style = str(settings.get("csvStyle", "CsvStyle.QuoteAlways"))
    if csv_style.lower() not in _CSV_STYLES:
        raise ManifestError(
            f"its csvStyle {csv_style!r} is not supported: "
            "CsvStyle.QuoteAlways or CsvStyle.QuoteAfterDelimiter"
        )
    encoding = str(settings.get("encoding", "UTF-8"))
    if encoding.lower() not in _UTF8:
        raise ManifestError(
            f"its encoding {encoding!r} is not supported: export the entity as UTF-8"
        )
    return CsvFormat(header, delimiter, _QUOTE_STYLES[quote_style.lower()])


def _boolean(value: object, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ManifestError(f"its {what} is {value!r}, not true or false")


def _kind(value: object) -> str:
    names: dict[type, str] = {dict: "object", list: "array", str: "string", bool: "boolean"}
    return "null" if value is None else names.get(type(value), "number")


# --- reading -----------------------------------------------------------------------------------


def entity_parts(entity: Entity, open_partition: Callable[[Partition], IO[bytes]]) -> Parts:
    """The entity as one snapshot in parts (see `exporter.core.snapshots.parts.Parts`): each
    partition is opened by `open_partition` only when the reader reaches it."""
    return Parts(
        columns=entity.attributes,
        parts=tuple(
            Part(
                p.blob,
                functools.partial(open_partition, p),
                header=p.format.header,
                delimiter=p.format.delimiter,
                quoting=p.format.quoting,
            )
            for p in entity.partitions
        ),
    )
