"""Building blocks shared by several methods. Import the submodules directly, e.g.
``from clipkit.blocks.text_classifier import classifier_from_templates``."""
