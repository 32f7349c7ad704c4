#!/usr/bin/env python
"""Extract the middle frame of every UCF101 video as a JPEG, in the layout the ``UCF101`` reader (and CoOp) reads.

    python scripts/prep_ucf101_midframes.py --root /data            # videos in /data/ucf101/UCF-101/
    python scripts/prep_ucf101_midframes.py --root /data --videos /elsewhere/UCF-101 --workers 8

writes ``<root>/ucf101/UCF-101-midframes/<Renamed_Action>/<video stem>.jpg`` (``ApplyEyeMakeup`` ->
``Apply_Eye_Makeup``) for every ``<Action>/<video>.avi``. The middle frame is frame ``n // 2`` (0-based) of the
``n`` decoded frames. Existing frames are skipped unless ``--force``. Offline.

Decoder: PyAV (``av`` in requirements.txt: FFmpeg's decoders, installed with the toolkit); Pillow for animated
image formats (.gif). A video that cannot be decoded is skipped; at the end the script prints how many, writes their
paths (and why) to ``--failed-list`` (default ``<root>/ucf101/unreadable_videos.txt``) and exits with status 1.
CoOp's ready-made ``UCF-101-midframes.zip`` is an alternative to running this script (DATASETS.md#ucf101).
"""

from __future__ import annotations

import argparse
import os
import sys
from multiprocessing import Pool

from PIL import Image
from tqdm import tqdm

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from datasets.ucf101 import FRAMES_FOLDER, frame_path  # noqa: E402

VIDEO_EXTENSIONS = (".avi", ".mp4", ".gif")
JPEG_QUALITY = 95
PIL_FORMATS = (".gif",)  # animated image formats Pillow decodes itself; everything else goes to PyAV
FAILED_LIST = "unreadable_videos.txt"


def middle_frame_pyav(path: str):
    """Frame ``n // 2`` of the ``n`` frames PyAV decodes from the first video stream."""
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        frames = list(container.decode(video=0))  # decoded frames; only the middle one is converted
    if not frames:
        raise ValueError("no frames decoded")
    return frames[len(frames) // 2].to_image()


def middle_frame_pil(path: str):
    with Image.open(path) as video:
        video.seek(getattr(video, "n_frames", 1) // 2)
        return video.convert("RGB")


def middle_frame(path: str):
    """The middle frame of a video as an RGB PIL image; raises (naming the file) when it cannot be decoded."""
    decode = middle_frame_pil if path.lower().endswith(PIL_FORMATS) else middle_frame_pyav
    try:
        return decode(path).convert("RGB")
    except ImportError:
        raise
    except Exception as err:  # av.error.*, OSError, ValueError: a truncated or corrupt video
        raise RuntimeError(f"cannot decode {path} ({type(err).__name__}: {err})") from err


def require_pyav() -> None:
    try:
        import av  # noqa: F401
    except ImportError as err:
        raise SystemExit(f"error: PyAV (the video decoder) is not installed ({err}); `pip install -r "
                         f"requirements.txt` installs it, or use CoOp's UCF-101-midframes archive "
                         f"(DATASETS.md#ucf101)") from err


def find_videos(videos_dir: str) -> list:
    """Relative paths ``<Action>/<video>`` of every video, sorted."""
    found = []
    for action in sorted(os.listdir(videos_dir)):
        action_dir = os.path.join(videos_dir, action)
        if os.path.isdir(action_dir):
            found += [f"{action}/{name}" for name in sorted(os.listdir(action_dir))
                      if name.lower().endswith(VIDEO_EXTENSIONS)]
    return found


def extract_one(job) -> tuple:
    """``(video, None)`` after writing its middle frame, or ``(video, reason)`` when it cannot be decoded."""
    video, out_path = job
    try:
        frame = middle_frame(video)
    except RuntimeError as err:
        return video, f"{type(err.__cause__).__name__}: {err.__cause__}"
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    frame.save(out_path, quality=JPEG_QUALITY)
    return video, None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="DATASET.ROOT: the folder that holds ucf101/")
    parser.add_argument("--videos", default="", help="folder of <Action>/<video>.avi (default <root>/ucf101/UCF-101)")
    parser.add_argument("--workers", type=int, default=1, help="parallel decoding processes")
    parser.add_argument("--force", action="store_true", help="re-extract frames that already exist")
    parser.add_argument("--failed-list", default="",
                        help=f"where to list the videos that cannot be decoded (default <root>/ucf101/{FAILED_LIST})")
    args = parser.parse_args(argv)
    dataset_dir = os.path.join(os.path.abspath(os.path.expanduser(args.root)), "ucf101")
    videos_dir = args.videos or os.path.join(dataset_dir, "UCF-101")
    if not os.path.isdir(videos_dir):
        raise SystemExit(f"error: video folder {videos_dir} not found; see DATASETS.md#ucf101")
    out_dir = os.path.join(dataset_dir, FRAMES_FOLDER)
    jobs = []
    for rel in find_videos(videos_dir):
        out_path = os.path.join(out_dir, frame_path(rel))
        if args.force or not os.path.isfile(out_path):
            jobs.append((os.path.join(videos_dir, rel), out_path))
    if any(not video.lower().endswith(PIL_FORMATS) for video, _ in jobs):
        require_pyav()
    progress = dict(total=len(jobs), desc="middle frames", unit="video", disable=None)
    if args.workers > 1:
        with Pool(args.workers) as pool:
            outcomes = list(tqdm(pool.imap_unordered(extract_one, jobs, chunksize=16), **progress))
    else:
        outcomes = [extract_one(job) for job in tqdm(jobs, **progress)]
    failed = sorted((video, reason) for video, reason in outcomes if reason)
    print(f"wrote {len(outcomes) - len(failed)} middle frames under {out_dir}")
    failed_list = args.failed_list or os.path.join(dataset_dir, FAILED_LIST)
    if not failed:
        if os.path.isfile(failed_list):  # left by an earlier run; those videos are done now
            os.remove(failed_list)
        return 0
    os.makedirs(os.path.dirname(os.path.abspath(failed_list)), exist_ok=True)
    with open(failed_list, "w", encoding="utf-8") as f:
        f.write("".join(f"{video}\t{reason}\n" for video, reason in failed))
    print(f"{len(failed)} of {len(outcomes)} videos could not be decoded and were skipped; their paths are in "
          f"{failed_list}. Re-download them, or use CoOp's UCF-101-midframes archive (DATASETS.md#ucf101).",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
