"""Registers the test-only tiny open_clip architectures (tests/plugins/open_clip_configs/*.json) with open_clip, so
that ``open_clip:clipkit-tiny-vit@<file>`` resolves in train.py subprocesses (CLIPKIT_EXTRA_PLUGINS). Test data only."""

import os

import open_clip

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "open_clip_configs")
open_clip.add_model_config(CONFIG_DIR)
