"""``results.json``: the machine-readable result of one run, written atomically beside ``log.txt``.

Schema (docs/architecture.md); accuracies are percentages at full precision (the log rounds to 0.1):

=========================  ======================================================================================
``method``                 TRAINER.NAME
``dataset``                the reader's ``dataset_key``
``backbone``               MODEL.BACKBONE.NAME
``seed``                   SEED
``accuracy_last``          test accuracy of the deployed model (final ``test()``)
``accuracy_best``          best per-epoch test accuracy when the method evaluates every epoch, else accuracy_last
``best_epoch``             1-based epoch of accuracy_best: the best test epoch with per-epoch tests, the best-val
                           checkpoint's epoch with TEST.FINAL_MODEL best_val, else MAX_EPOCH; 0 without training
``best_is_test_selection`` true when accuracy_best was selected on the test set (an oracle number, report as such)
``macro_f1``               macro F1 of the final test (percent)
``per_class_accuracy``     {classname: accuracy} of the final test
``num_test``               number of evaluated test images
``config_digest``          sha256 of the resolved config restricted to what changes numerics (no output path,
                           no other method's TRAINER node: clipkit/run_folder.py)
``wall_time_s``            training (all epochs, across resumes) + final evaluation time
``peak_memory_mb``         CUDA max allocated on GPU, process max RSS on CPU
``epochs``                 [{"epoch": E, <metric>: value, ...}] from ``log_epoch_metrics``
=========================  ======================================================================================
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Dict

SCHEMA_VERSION = 1
REQUIRED_KEYS = (
    "method",
    "dataset",
    "backbone",
    "seed",
    "accuracy_last",
    "accuracy_best",
    "best_epoch",
    "best_is_test_selection",
    "macro_f1",
    "per_class_accuracy",
    "num_test",
    "config_digest",
    "wall_time_s",
    "peak_memory_mb",
    "epochs",
)


def config_digest(cfg, node=None) -> str:
    """sha256 (hex) of ``numerics_config(cfg)``: identical configs in two folders give the same digest."""
    from clipkit.run_folder import numerics_config

    return digest_of(numerics_config(cfg, node))


def digest_of(config: Dict) -> str:
    """sha256 (hex) of a ``numerics_config`` dict."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def atomic_write_json(obj, path: str) -> str:
    """Write ``obj`` as JSON to ``path`` through a temporary file in the same folder, fsync and ``os.replace``."""
    from clipkit.run_folder import atomic_write_text

    return atomic_write_text(json.dumps(obj, indent=2, allow_nan=True) + "\n", path)


def validate_results(results: Dict, where: str = "results") -> None:
    """Raise ValueError naming ``where`` and the missing keys."""
    missing = [key for key in REQUIRED_KEYS if key not in results]
    if missing:
        raise ValueError(f"{where} lacks the keys {missing} of the results.json schema (clipkit/results.py)")


def write_results(results: Dict, path: str) -> str:
    """Validate against the schema and write atomically; returns ``path``."""
    validate_results(results, where=f"results for {path}")
    data = {"schema_version": SCHEMA_VERSION}
    data.update(results)
    return atomic_write_json(data, path)


def read_json_file(path: str) -> Dict:
    """A JSON object from ``path``; ValueError naming the file when it is not valid JSON or not an object."""
    try:
        with open(path, "r") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it and re-run the job") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, expected a JSON object")
    return data


def read_results(path: str) -> Dict:
    """Read and validate a results.json; errors name the file and what is wrong with it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No results file at {path}: the run did not finish (see log.txt beside it)")
    data = read_json_file(path)
    validate_results(data, where=path)
    return data


__all__ = [
    "REQUIRED_KEYS", "SCHEMA_VERSION", "atomic_write_json", "config_digest", "digest_of", "read_json_file", "read_results",
    "validate_results", "write_results",
]
