"""CuPL: zero-shot CLIP with LLM-generated class descriptions (Pratt et al., ICCV'23; baselines.md Sec. 3).

    W = stack_c normalize( mean_j normalize(E_t(d_cj)) )             (C, D), d_cj = descriptions of class c
    logits(x) = LOGIT_SCALE * normalize(E_v(x)) . W^T                 (B, C)

``TEXT_SOURCE "both"`` is CuPL's "CuPL + e" variant: the filled templates join each class's description pool before
the mean. microCLIP Table 1 uses the descriptions alone (official ``init_classifier_weights_gpt3``).
"""

from __future__ import annotations

from clipkit.blocks.text_classifier import description_embeddings, mean_classifier, prompt_ready
from clipkit.config import CN, cfg_extension
from clipkit.dassl import TRAINER_REGISTRY

from ._training_free import TrainingFreeTrainer

TEXT_SOURCES = ("descriptions", "both")


@cfg_extension
def _add_cupl_cfg(cfg):
    cfg.TRAINER.CUPL = CN()
    # Multiplies the cosine similarities (CLIP's trained temperature exp(t) = 100); does not change predictions.
    cfg.TRAINER.CUPL.LOGIT_SCALE = 100.0
    # "descriptions": CuPL sentences only (microCLIP Table 1). "both": dataset templates and descriptions pooled
    # into one per-class set before the mean (CuPL paper, Table 3 "CuPL + e").
    cfg.TRAINER.CUPL.TEXT_SOURCE = "descriptions"


@TRAINER_REGISTRY.register()
class CuPL(TrainingFreeTrainer):
    """Frozen CLIP, mean of description embeddings per class (trainer.descriptions()), no training."""

    cfg_node = "CUPL"

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        if cfg.TRAINER.CUPL.TEXT_SOURCE not in TEXT_SOURCES:
            raise ValueError(f"TRAINER.CUPL.TEXT_SOURCE must be one of {TEXT_SOURCES}, got "
                             f"{cfg.TRAINER.CUPL.TEXT_SOURCE!r}")

    def build_text_classifier(self):
        descriptions = self.descriptions()
        if self.method_cfg.TEXT_SOURCE == "both":
            templates = self.templates()
            descriptions = {
                name: [t.format(prompt_ready(name)) for t in templates] + list(descriptions[name])
                for name in self.classnames
            }
        counts = [len(descriptions[name]) for name in self.classnames]
        print(f"CuPL text source '{self.method_cfg.TEXT_SOURCE}': {min(counts)}-{max(counts)} sentences per class")
        return mean_classifier(description_embeddings(self.clip_model, self.classnames, descriptions))
