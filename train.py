"""CoOp-style entry point: ``python train.py --root DATA --trainer NAME --config-file ... [yacs opts]``.

Config merge order: Dassl defaults + extend_cfg (all plugins) -> --dataset-config-file -> --config-file ->
--extra-config-file (each, in order) -> CLI flags ->
trailing ``KEY VALUE`` opts -> freeze. Plugins: every module of datasets/, trainers/, baselines/, plus the
comma-separated module names in the environment variable CLIPKIT_EXTRA_PLUGINS (e.g. test-only plugins).

Run folders (clipkit/run_folder.py): OUTPUT_DIR is locked for the whole run (a second launch into it stops at
once); its numerics config is recorded in run_config.json. Re-running into an existing OUTPUT_DIR with the same
config resumes exactly from the newest checkpoint; a finished run is not retrained, it is tested again and writes the
same results.json. A different config is refused with the differing keys (``--force`` archives the old run first);
``--eval-only`` never overwrites a trained result. A crash leaves OUTPUT_DIR/failed.txt (error line and traceback).
"""

import argparse
import importlib
import io
import os
import sys
import traceback

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
    if getattr(args, "views_on_device", False):
        cfg.DATALOADER.VIEWS = "device"


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
    except Exception as err:  # yaml.YAMLError and friends: name the file
        raise ValueError(f"{flag} {path}: not a valid YAML config ({type(err).__name__}: {err})") from err


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


def close_log(logger, console) -> None:
    """Give ``sys.stdout`` back to ``console`` and close only the log file of ``logger``: clipkit's tee, or Dassl's
    ``Logger``, whose ``close()`` (also called by its ``__del__``) closes the console stream too; its console is
    swapped for a throw-away buffer so that neither path can close the real stdout."""
    if logger is None:
        return
    if sys.stdout is logger:
        sys.stdout = console
    handle = getattr(logger, "file", None)
    if handle is not None and handle is not console and not getattr(handle, "closed", True):
        handle.close()
    if hasattr(logger, "file"):
        logger.file = None
    if getattr(logger, "console", None) is not None:
        logger.console = io.StringIO()


def guard_run_folder(args, cfg, folder) -> None:
    """Lock, then the refusals (changed config, eval-only over a trained result), then record the config."""
    from clipkit import results as results_io
    from clipkit.dassl import TRAINER_REGISTRY
    from clipkit.run_folder import method_node, numerics_config

    folder.acquire()
    try:
        trainer_cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    except KeyError:
        trainer_cls = None  # build_trainer reports the unknown name
    config = numerics_config(cfg, method_node(cfg.TRAINER.NAME, trainer_cls))
    archived = folder.check_config(config, force=args.force)
    if args.eval_only:
        archived = folder.check_eval_only(args.model_dir, force=args.force) or archived
    elif args.force and archived is None and folder.has_state() and folder.recorded_config() is None:
        archived = folder.archive()
    if archived:
        print(f"--force: the previous contents of {cfg.OUTPUT_DIR} were moved to {archived}")
    folder.record_config(config, results_io.digest_of(config))


def main(args):
    from clipkit.run_folder import RunFolder

    cfg = setup_cfg(args)
    folder = RunFolder(cfg.OUTPUT_DIR) if cfg.OUTPUT_DIR else None
    try:
        if folder is not None:
            guard_run_folder(args, cfg, folder)
        run(args, cfg)
    finally:
        if folder is not None:
            folder.release()


def run(args, cfg):
    """Seed, log tee, trainer, then train or evaluate (the run folder is already guarded)."""
    import torch

    from clipkit.dassl import build_trainer, collect_env_info, set_random_seed, setup_logger

    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    console = sys.stdout
    logger = setup_logger(cfg.OUTPUT_DIR)
    if logger is None and sys.stdout is not console:
        logger = sys.stdout  # Dassl's setup_logger returns nothing and installs its Logger as sys.stdout
    try:
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
        elif not args.no_train:
            trainer.train()
        failed = os.path.join(cfg.OUTPUT_DIR, FAILED_FILE) if cfg.OUTPUT_DIR else ""
        if failed and os.path.isfile(failed):
            os.remove(failed)  # a stale report of an earlier crash
    finally:
        sys.stdout.flush()
        close_log(logger, console)


FAILED_FILE = "failed.txt"  # the sweep's name (clipkit/sweep.py), read by output_parser.py


def write_failure(output_dir: str, argv, error: BaseException) -> None:
    """``<output_dir>/failed.txt`` for a crashed run (output_parser.py shows its ``error:`` line)."""
    if not output_dir:
        return
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    first = f"{type(error).__name__}: {error}".splitlines()[0]
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, FAILED_FILE), "w", encoding="utf-8") as handle:
        handle.write(f"command: train.py {' '.join(argv)}\nerror: {first}\n--- traceback ---\n{text}")


def cli(argv=None) -> int:
    """``python train.py``: exit 0 on success, 2 on a refusal (message on stderr), 75 when the folder is locked by
    another process, 1 on a crash (with failed.txt)."""
    from clipkit.run_folder import RunFolderError, RunLockedError

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    die_with_sweep()
    try:
        main(args)
    except RunLockedError as err:
        print(f"error: {err}", file=sys.stderr)
        return LOCKED_EXIT_CODE
    except RunFolderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        output_dir = args.output_dir or _output_dir_from_opts(args.opts)
        try:
            write_failure(output_dir, argv, err)
        finally:
            raise
    return 0


def die_with_sweep() -> None:
    """Under a sweep (CLIPKIT_SWEEP_PID), ask the kernel for SIGTERM when the sweep dies, even by SIGKILL (Linux
    prctl PR_SET_PDEATHSIG; elsewhere a no-op), and stop at once if it is already gone."""
    parent = os.environ.get("CLIPKIT_SWEEP_PID", "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):
        sys.exit("error: the sweep that launched this job is gone")


LOCKED_EXIT_CODE = 75  # EX_TEMPFAIL: another process holds the run folder (the sweep counts the job as elsewhere)


def _output_dir_from_opts(opts) -> str:
    opts = list(opts or [])
    for key, value in zip(opts[::2], opts[1::2]):
        if key == "OUTPUT_DIR":
            return value
    return ""


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
    parser.add_argument("--views-on-device", action="store_true",
                        help="build the weak view and the multi-view crops on the training device from the decoded "
                             "images (DATALOADER.VIEWS device; microCLIP)")
    parser.add_argument("--model-dir", type=str, default="", help="load model from this directory for eval-only mode")
    parser.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    parser.add_argument("--force", action="store_true",
                        help="run even though OUTPUT_DIR holds a different experiment (or, with --eval-only, a trained "
                             "result): its contents are moved to OUTPUT_DIR/archive/<timestamp>/ first")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="modify config options using the command-line")
    return parser


if __name__ == "__main__":
    sys.exit(cli())
