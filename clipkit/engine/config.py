"""``get_cfg_default()``: Dassl's yacs default tree (every key and default value of Dassl 0.6.3).

The per-trainer nodes of Dassl's built-in trainers are kept so that ``print(cfg)`` matches a Dassl run byte for byte.
"""

from __future__ import annotations

from yacs.config import CfgNode as CN


def _build_default() -> CN:
    C = CN()
    C.VERSION = 1
    C.OUTPUT_DIR = "./output"  # folder of log.txt, checkpoints, tensorboard
    C.RESUME = ""  # checkpoint folder to resume from ("" = OUTPUT_DIR)
    C.SEED = -1  # < 0: no fixed seed
    C.USE_CUDA = True
    C.VERBOSE = True

    C.INPUT = CN()
    C.INPUT.SIZE = (224, 224)
    C.INPUT.INTERPOLATION = "bilinear"  # bilinear | bicubic | nearest
    C.INPUT.TRANSFORMS = ()  # names understood by build_transform
    C.INPUT.NO_TRANSFORM = False
    C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]  # ImageNet statistics (CLIP configs set CLIP's)
    C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]
    C.INPUT.CROP_PADDING = 4  # random_crop padding
    C.INPUT.RRCROP_SCALE = (0.08, 1.0)  # random_resized_crop area range
    C.INPUT.CUTOUT_N = 1  # cutout holes
    C.INPUT.CUTOUT_LEN = 16  # cutout side in pixels
    C.INPUT.GN_MEAN = 0.0  # gaussian_noise mean
    C.INPUT.GN_STD = 0.15  # gaussian_noise std
    C.INPUT.RANDAUGMENT_N = 2  # ops per image
    C.INPUT.RANDAUGMENT_M = 10  # magnitude (randaugment only)
    C.INPUT.COLORJITTER_B = 0.4
    C.INPUT.COLORJITTER_C = 0.4
    C.INPUT.COLORJITTER_S = 0.4
    C.INPUT.COLORJITTER_H = 0.1
    C.INPUT.RGS_P = 0.2  # random grayscale probability
    C.INPUT.GB_P = 0.5  # gaussian blur probability
    C.INPUT.GB_K = 21  # gaussian blur kernel (odd)

    C.DATASET = CN()
    C.DATASET.ROOT = ""
    C.DATASET.NAME = ""
    C.DATASET.SOURCE_DOMAINS = ()
    C.DATASET.TARGET_DOMAINS = ()
    C.DATASET.NUM_LABELED = -1
    C.DATASET.NUM_SHOTS = -1
    C.DATASET.VAL_PERCENT = 0.1
    C.DATASET.STL10_FOLD = -1
    C.DATASET.CIFAR_C_TYPE = ""
    C.DATASET.CIFAR_C_LEVEL = 1
    C.DATASET.ALL_AS_UNLABELED = False

    C.DATALOADER = CN()
    C.DATALOADER.NUM_WORKERS = 4
    C.DATALOADER.K_TRANSFORMS = 1  # augmented views per training image
    C.DATALOADER.RETURN_IMG0 = False  # also return the un-augmented image as img0
    C.DATALOADER.TRAIN_X = CN()
    C.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
    C.DATALOADER.TRAIN_X.BATCH_SIZE = 32
    C.DATALOADER.TRAIN_X.N_DOMAIN = 0
    C.DATALOADER.TRAIN_X.N_INS = 16
    C.DATALOADER.TRAIN_U = CN()
    C.DATALOADER.TRAIN_U.SAME_AS_X = True
    C.DATALOADER.TRAIN_U.SAMPLER = "RandomSampler"
    C.DATALOADER.TRAIN_U.BATCH_SIZE = 32
    C.DATALOADER.TRAIN_U.N_DOMAIN = 0
    C.DATALOADER.TRAIN_U.N_INS = 16
    C.DATALOADER.TEST = CN()
    C.DATALOADER.TEST.SAMPLER = "SequentialSampler"
    C.DATALOADER.TEST.BATCH_SIZE = 32

    C.MODEL = CN()
    C.MODEL.INIT_WEIGHTS = ""
    C.MODEL.BACKBONE = CN()
    C.MODEL.BACKBONE.NAME = ""  # CLIP trainers: the CLIP name or checkpoint path
    C.MODEL.BACKBONE.PRETRAINED = True
    C.MODEL.HEAD = CN()
    C.MODEL.HEAD.NAME = ""
    C.MODEL.HEAD.HIDDEN_LAYERS = ()
    C.MODEL.HEAD.ACTIVATION = "relu"
    C.MODEL.HEAD.BN = True
    C.MODEL.HEAD.DROPOUT = 0.0

    C.OPTIM = CN()
    C.OPTIM.NAME = "adam"  # adam | amsgrad | sgd | rmsprop | radam | adamw
    C.OPTIM.LR = 0.0003
    C.OPTIM.WEIGHT_DECAY = 5e-4
    C.OPTIM.MOMENTUM = 0.9
    C.OPTIM.SGD_DAMPNING = 0
    C.OPTIM.SGD_NESTEROV = False
    C.OPTIM.RMSPROP_ALPHA = 0.99
    C.OPTIM.ADAM_BETA1 = 0.9
    C.OPTIM.ADAM_BETA2 = 0.999
    C.OPTIM.STAGED_LR = False  # NEW_LAYERS get LR, other children LR * BASE_LR_MULT
    C.OPTIM.NEW_LAYERS = ()
    C.OPTIM.BASE_LR_MULT = 0.1
    C.OPTIM.LR_SCHEDULER = "single_step"  # single_step | multi_step | cosine
    C.OPTIM.STEPSIZE = (-1,)  # <= 0: MAX_EPOCH
    C.OPTIM.GAMMA = 0.1
    C.OPTIM.MAX_EPOCH = 10
    C.OPTIM.WARMUP_EPOCH = -1  # <= 0: no warmup
    C.OPTIM.WARMUP_TYPE = "linear"  # constant | linear
    C.OPTIM.WARMUP_CONS_LR = 1e-5
    C.OPTIM.WARMUP_MIN_LR = 1e-5
    C.OPTIM.WARMUP_RECOUNT = True  # restart the successor schedule after warmup

    C.TRAIN = CN()
    C.TRAIN.CHECKPOINT_FREQ = 0  # save every N epochs (0: last epoch only)
    # TRAIN.CHECKPOINT_KEEP (newest epoch checkpoints kept) and TRAIN.CHECKPOINT_EVERY_STEPS (intra-epoch checkpoints
    # every N optimisation steps, 0 = off) are added by clipkit/trainer_base.py for both engines (real Dassl has
    # neither): see the comments there and clipkit/engine/checkpoint.py.
    C.TRAIN.PRINT_FREQ = 10  # progress line every N batches
    C.TRAIN.COUNT_ITER = "train_x"  # TrainerXU: train_x | train_u | smaller_one

    C.TEST = CN()
    C.TEST.EVALUATOR = "Classification"
    C.TEST.PER_CLASS_RESULT = False
    C.TEST.COMPUTE_CMAT = False
    C.TEST.NO_TEST = False
    C.TEST.SPLIT = "test"  # val | test
    C.TEST.FINAL_MODEL = "last_step"  # last_step | best_val

    C.TRAINER = CN()
    C.TRAINER.NAME = ""
    _add_dassl_builtin_trainer_nodes(C.TRAINER)
    return C


def _add_dassl_builtin_trainer_nodes(T: CN) -> None:
    """Nodes of Dassl's own trainers: unused by clipkit, kept so that config dumps equal Dassl's."""
    T.MCD = CN()
    T.MCD.N_STEP_F = 4
    T.MME = CN()
    T.MME.LMDA = 0.1
    T.CDAC = CN()
    T.CDAC.CLASS_LR_MULTI = 10
    T.CDAC.RAMPUP_COEF = 30
    T.CDAC.RAMPUP_ITRS = 1000
    T.CDAC.TOPK_MATCH = 5
    T.CDAC.P_THRESH = 0.95
    T.CDAC.STRONG_TRANSFORMS = ()
    T.SE = CN()
    T.SE.EMA_ALPHA = 0.999
    T.SE.CONF_THRE = 0.95
    T.SE.RAMPUP = 300
    T.M3SDA = CN()
    T.M3SDA.LMDA = 0.5
    T.M3SDA.N_STEP_F = 4
    T.DAEL = CN()
    T.DAEL.WEIGHT_U = 0.5
    T.DAEL.CONF_THRE = 0.95
    T.DAEL.STRONG_TRANSFORMS = ()
    T.CROSSGRAD = CN()
    T.CROSSGRAD.EPS_F = 1.0
    T.CROSSGRAD.EPS_D = 1.0
    T.CROSSGRAD.ALPHA_F = 0.5
    T.CROSSGRAD.ALPHA_D = 0.5
    T.DDAIG = CN()
    T.DDAIG.G_ARCH = ""
    T.DDAIG.LMDA = 0.3
    T.DDAIG.CLAMP = False
    T.DDAIG.CLAMP_MIN = -1.0
    T.DDAIG.CLAMP_MAX = 1.0
    T.DDAIG.WARMUP = 0
    T.DDAIG.ALPHA = 0.5
    T.DAELDG = CN()
    T.DAELDG.WEIGHT_U = 0.5
    T.DAELDG.CONF_THRE = 0.95
    T.DAELDG.STRONG_TRANSFORMS = ()
    T.DOMAINMIX = CN()
    T.DOMAINMIX.TYPE = "crossdomain"
    T.DOMAINMIX.ALPHA = 1.0
    T.DOMAINMIX.BETA = 1.0
    T.ENTMIN = CN()
    T.ENTMIN.LMDA = 1e-3
    T.MEANTEACHER = CN()
    T.MEANTEACHER.WEIGHT_U = 1.0
    T.MEANTEACHER.EMA_ALPHA = 0.999
    T.MEANTEACHER.RAMPUP = 5
    T.MIXMATCH = CN()
    T.MIXMATCH.WEIGHT_U = 100.0
    T.MIXMATCH.TEMP = 2.0
    T.MIXMATCH.MIXUP_BETA = 0.75
    T.MIXMATCH.RAMPUP = 20000
    T.FIXMATCH = CN()
    T.FIXMATCH.WEIGHT_U = 1.0
    T.FIXMATCH.CONF_THRE = 0.95
    T.FIXMATCH.STRONG_TRANSFORMS = ()


_DEFAULT = _build_default()


def get_cfg_default() -> CN:
    """A fresh copy of the default config (yacs: unknown keys and type changes are rejected on merge)."""
    return _DEFAULT.clone()


def clean_cfg(cfg: CN, trainer: str) -> None:
    """Drop every ``TRAINER.<X>`` node except ``NAME`` and the node of ``trainer`` (Dassl's tools/train.py)."""
    for key in list(cfg.TRAINER.keys()):
        if key not in ("NAME", trainer.upper()):
            cfg.TRAINER.pop(key, None)
