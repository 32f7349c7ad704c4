"""Import every plugin module so that trainers, datasets and their config extensions are registered."""

from __future__ import annotations

import importlib
import os
import pkgutil

from . import REPO_ROOT

PLUGIN_PACKAGES = ("datasets", "trainers", "baselines")


def import_all_plugins(packages=PLUGIN_PACKAGES) -> list:
    """Import ``<pkg>.<module>`` for every module file in the plugin packages; returns the module names."""
    import sys

    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    names = []
    for package in packages:
        folder = os.path.join(REPO_ROOT, package)
        if not os.path.isdir(folder):
            continue
        importlib.import_module(package)
        for info in sorted(pkgutil.iter_modules([folder]), key=lambda m: m.name):
            if info.name.startswith("_"):
                continue
            name = f"{package}.{info.name}"
            importlib.import_module(name)
            names.append(name)
    return names
