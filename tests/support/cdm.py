"""Customer Insights CDM folders for tests: the model.json its export to Azure Blob Storage
writes last, naming each entity's attributes and its headerless CSV partitions by URL."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence


def model_json(
    entities: Mapping[str, Sequence[str]],
    *,
    attributes: Sequence[str],
    base: str,
    encoding: str | None = None,
) -> bytes:
    """model.json for these entities (name -> partition blob names, found under `base`, the
    container's URL), every attribute a string; `encoding` goes into each partition's format
    settings when given."""
    settings: dict[str, object] = {
        "$type": "CsvFormatSettings",
        "columnHeaders": False,
        "delimiter": ",",
        "quoteStyle": "QuoteStyle.Csv",
        "csvStyle": "CsvStyle.QuoteAlways",
    }
    if encoding is not None:
        settings["encoding"] = encoding
    return json.dumps(
        {
            "name": "BlobExport",
            "version": "1.0",
            "entities": [
                {
                    "$type": "LocalEntity",
                    "name": name,
                    "attributes": [{"name": a, "dataType": "string"} for a in attributes],
                    "partitions": [
                        {
                            "name": blob.rsplit("/", 1)[-1].removesuffix(".csv"),
                            "location": f"{base}/{blob}",
                            "fileFormatSettings": settings,
                        }
                        for blob in blobs
                    ],
                }
                for name, blobs in entities.items()
            ],
        }
    ).encode()
