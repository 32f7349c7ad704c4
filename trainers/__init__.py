"""Trainers of the toolkit's own method (microCLIP); imported by clipkit.plugins.import_all_plugins."""
