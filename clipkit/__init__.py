"""clipkit: shared engine, CLIP utilities and building blocks of the unsupervised CLIP adaptation toolkit."""

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cache_root() -> str:
    """Folder for generated artefacts (tiny benchmark, feature caches). Override with CLIPKIT_CACHE."""
    return os.path.abspath(os.path.expanduser(os.environ.get("CLIPKIT_CACHE", os.path.join(REPO_ROOT, ".cache"))))
