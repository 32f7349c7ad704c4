"""CoOp-style entry point: ``python train.py --root DATA --trainer NAME --config-file ... [yacs opts]``.

Config merge order: Dassl defaults + extend_cfg (all plugins) -> --dataset-config-file -> --config-file ->
--extra-config-file (each, in order) -> CLI flags ->
trailing ``KEY VALUE`` opts -> freeze. Plugins: every module of datasets/, trainers/, baselines/, plus the
comma-separated module names in the environment variable CLIPKIT_EXTRA_PLUGINS (e.g. test-only plugins).

Re-running into an existing OUTPUT_DIR resumes (Dassl): a finished run is not retrained; it is tested again and its
results.json rewritten.
"""

import argparse
import importlib
import os
import sys

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

# torch, the engine and the plugins are imported inside the functions, so that `train.py --help` answers at once.

EXTRA_PLUGINS_ENV = "CLIPKIT_EXTRA_PLUGINS"


def import_extra_plugins() -> list:
    """Import the modules named in CLIPKIT_EXTRA_PLUGINS (comma-separated)."""
    names = [name.strip() for name in os.environ.get(EXTRA_PLUGINS_ENV, "").split(",") if name.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ImportError(f"{EXTRA_PLUGINS_ENV}: cannot import plugin module '{name}' ({err})") from err
    return names


def print_args(args, cfg):
    print("***************")
    print("** Arguments **")
    print("***************")
    for key in sorted(args.__dict__):
        print(f"{key}: {args.__dict__[key]}")
    print("************")
    print("** Config **")
    print("************")
    print(cfg)


def reset_cfg(cfg, args):
    """CLI flags override the YAML files (CoOp's reset_cfg; --seed applies when >= 0)."""
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed is not None and args.seed >= 0:
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head


def extend_cfg(cfg):
    """Register every plugin (datasets/, trainers/, baselines/, CLIPKIT_EXTRA_PLUGINS), then declare their keys."""
    from clipkit import config as clipkit_config
    from clipkit.plugins import import_all_plugins

    import_all_plugins()
    import clipkit.trainer_base  # noqa: F401  (declares TEST.EVAL_EVERY_EPOCH)

    import_extra_plugins()
    clipkit_config.extend_cfg(cfg)


def _merge_file(cfg, path, flag):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag} {path}: no such file")
    try:
        cfg.merge_from_file(path)
    except (KeyError, ValueError, AssertionError) as err:
        raise type(err)(f"{flag} {path}: {err}") from err


def setup_cfg(args):
    from clipkit.dassl import get_cfg_default

    cfg = get_cfg_default()
    extend_cfg(cfg)
    if args.dataset_config_file:
        _merge_file(cfg, args.dataset_config_file, "--dataset-config-file")
    if args.config_file:
        _merge_file(cfg, args.config_file, "--config-file")
    for path in args.extra_config_file or []:  # e.g. an ablation YAML holding only a method's switches
        _merge_file(cfg, path, "--extra-config-file")
    reset_cfg(cfg, args)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def main(args):
    import torch

    from clipkit.dassl import build_trainer, collect_env_info, set_random_seed, setup_logger

    cfg = setup_cfg(args)
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    setup_logger(cfg.OUTPUT_DIR)

    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True

    print_args(args, cfg)
    print("Collecting env info ...")
    print(f"** System info **\n{collect_env_info()}\n")

    trainer = build_trainer(cfg)

    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
        if hasattr(trainer, "write_results"):
            trainer.write_results()
        return

    if not args.no_train:
        trainer.train()


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=str, default="", help="path to dataset")
    parser.add_argument("--output-dir", type=str, default="", help="output directory")
    parser.add_argument("--resume", type=str, default="",
                        help="checkpoint directory (from which the training resumes)")
    parser.add_argument("--seed", type=int, default=-1, help="only positive value enables a fixed seed")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="path to config file")
    parser.add_argument("--dataset-config-file", type=str, default="", help="path to config file for dataset setup")
    parser.add_argument("--extra-config-file", type=str, action="append", default=[],
                        help="further YAML merged after --config-file, in order (repeatable; e.g. ablation switches)")
    parser.add_argument("--trainer", type=str, default="", help="name of trainer")
    parser.add_argument("--backbone", type=str, default="", help="name of CNN backbone")
    parser.add_argument("--head", type=str, default="", help="name of head")
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument("--model-dir", type=str, default="", help="load model from this directory for eval-only mode")
    parser.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="modify config options using the command-line")
    return parser


if __name__ == "__main__":
    main(build_parser().parse_args())
