"""Zero-shot CLIP with the per-dataset prompt ensemble (Radford et al., ICML'21; baselines.md Sec. 2).

    W = stack_c normalize( mean_t normalize(E_t(t.format(c))) )      (C, D)
    logits(x) = LOGIT_SCALE * normalize(E_v(x)) . W^T                 (B, C)

``PER_PROMPT_NORM False`` switches to microCLIP's ensemble (official ``load_zs_classname_embeddings``), which divides
each class's whole (T, D) prompt matrix by its Frobenius norm, i.e. averages the raw prompt embeddings.
"""

from __future__ import annotations

from clipkit.blocks.text_classifier import classifier_from_templates
from clipkit.config import CN, cfg_extension
from clipkit.dassl import TRAINER_REGISTRY

from ._training_free import TrainingFreeTrainer


@cfg_extension
def _add_zeroshotclip_cfg(cfg):
    cfg.TRAINER.ZEROSHOTCLIP = CN()
    # Multiplies the cosine similarities (CLIP's trained temperature exp(t) = 100); does not change predictions.
    cfg.TRAINER.ZEROSHOTCLIP.LOGIT_SCALE = 100.0
    # True: normalise each prompt embedding before the template mean (CLIP, CuPL, DPA). False: microCLIP's
    # whole-matrix Frobenius normalisation (= mean of raw embeddings; official utils/model.py L424).
    cfg.TRAINER.ZEROSHOTCLIP.PER_PROMPT_NORM = True


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(TrainingFreeTrainer):
    """Frozen CLIP, template-ensemble classifier (trainer.templates()), no training."""

    cfg_node = "ZEROSHOTCLIP"

    def build_text_classifier(self):
        templates = self.templates()
        print(f"Prompt ensemble: {len(templates)} templates, per-prompt normalisation "
              f"{self.method_cfg.PER_PROMPT_NORM}")
        return classifier_from_templates(
            self.clip_model, self.classnames, templates, per_prompt_norm=self.method_cfg.PER_PROMPT_NORM
        )
