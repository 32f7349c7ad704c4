#!/usr/bin/env python
"""Extract the middle frame of every UCF101 video as a JPEG, in the layout the ``UCF101`` reader (and CoOp) reads.

    python scripts/prep_ucf101_midframes.py --root /data            # videos in /data/ucf101/UCF-101/
    python scripts/prep_ucf101_midframes.py --root /data --videos /elsewhere/UCF-101 --workers 8

writes ``<root>/ucf101/UCF-101-midframes/<Renamed_Action>/<video stem>.jpg`` (``ApplyEyeMakeup`` ->
``Apply_Eye_Makeup``) for every ``<Action>/<video>.avi``. The middle frame is frame ``n // 2`` (0-based) of the
``n`` decoded frames. Existing frames are skipped unless ``--force``. Offline.

Decoders, first available wins: ``torchvision.io.read_video`` (older torchvision releases), PyAV (``pip install av``),
then Pillow (animated formats only; it cannot open .avi). CoOp's ready-made ``UCF-101-midframes.zip`` is an
alternative to running this script (DATASETS.md#ucf101).
"""

from __future__ import annotations

import argparse
import os
import sys
from multiprocessing import Pool

from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from datasets.ucf101 import FRAMES_FOLDER, frame_path  # noqa: E402

VIDEO_EXTENSIONS = (".avi", ".mp4", ".gif")
JPEG_QUALITY = 95


def middle_frame_torchvision(path: str):
    from torchvision.io import read_video  # removed from recent torchvision releases

    frames, _, _ = read_video(path, pts_unit="sec", output_format="THWC")
    if len(frames) == 0:
        raise ValueError("no frames decoded")
    return Image.fromarray(frames[len(frames) // 2].numpy())


def middle_frame_pyav(path: str):
    import av

    with av.open(path) as container:
        frames = [frame.to_image() for frame in container.decode(video=0)]
    if not frames:
        raise ValueError("no frames decoded")
    return frames[len(frames) // 2]


def middle_frame_pil(path: str):
    with Image.open(path) as video:
        count = getattr(video, "n_frames", 1)
        video.seek(count // 2)
        return video.convert("RGB")


DECODERS = (("torchvision.io", middle_frame_torchvision), ("PyAV", middle_frame_pyav), ("Pillow", middle_frame_pil))


def middle_frame(path: str):
    """The middle frame of a video as an RGB PIL image; the error lists why each decoder failed."""
    failures = []
    for name, decode in DECODERS:
        try:
            return decode(path).convert("RGB")
        except Exception as err:  # ImportError, decoder errors: try the next decoder
            failures.append(f"{name}: {type(err).__name__}: {err}")
    raise RuntimeError(f"cannot decode {path}:\n  " + "\n  ".join(failures) +
                       "\nInstall PyAV (`pip install av`) or use CoOp's UCF-101-midframes archive "
                       "(DATASETS.md#ucf101).")


def find_videos(videos_dir: str) -> list:
    """Relative paths ``<Action>/<video>`` of every video, sorted."""
    found = []
    for action in sorted(os.listdir(videos_dir)):
        action_dir = os.path.join(videos_dir, action)
        if os.path.isdir(action_dir):
            found += [f"{action}/{name}" for name in sorted(os.listdir(action_dir))
                      if name.lower().endswith(VIDEO_EXTENSIONS)]
    return found


def extract_one(job) -> str:
    video, out_path = job
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    middle_frame(video).save(out_path, quality=JPEG_QUALITY)
    return out_path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="DATASET.ROOT: the folder that holds ucf101/")
    parser.add_argument("--videos", default="", help="folder of <Action>/<video>.avi (default <root>/ucf101/UCF-101)")
    parser.add_argument("--workers", type=int, default=1, help="parallel decoding processes")
    parser.add_argument("--force", action="store_true", help="re-extract frames that already exist")
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
    if args.workers > 1:
        with Pool(args.workers) as pool:
            done = sum(1 for _ in pool.imap_unordered(extract_one, jobs, chunksize=16))
    else:
        done = sum(1 for _ in map(extract_one, jobs))
    print(f"wrote {done} middle frames under {out_dir}")


if __name__ == "__main__":
    main()
