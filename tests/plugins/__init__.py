"""Test-only plugins (datasets and trainers), loaded with ``CLIPKIT_EXTRA_PLUGINS=tests.plugins.<module>``."""
