"""The console's pages, one module each; each registers its routes (`router.route`) when it is
imported. Importing this package imports every module in it, so a new page needs no list to be
kept here."""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
