#!/usr/bin/env python
"""Download CuPL's published GPT-3 class descriptions (Pratt et al., ICCV 2023) into ``descriptions/<key>.json``.

    python scripts/download_descriptions.py                     # all 13 datasets, CuPL "full" prompts
    python scripts/download_descriptions.py --dataset dtd --dataset ucf101
    python scripts/download_descriptions.py --variant base      # CuPL "base" prompts
    python scripts/download_descriptions.py --list              # print the URLs only

The files are CuPL's, not ours: they are not committed (descriptions/README.md). microCLIP used the "full" files
for all datasets except Birdsnap, where its file is CuPL's "base" one (DEVIATIONS.md (datasets section)). CuPL publishes
ImageNet's "full" descriptions as ``imagenet_prompts/CuPL_image_prompts.json``. ``--base-url`` accepts any mirror
with the same paths, including ``file://`` folders.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUPL_BASE_URL = "https://raw.githubusercontent.com/sarahpratt/CuPL/main/"
DOWNLOAD_TIMEOUT_S = 120

# dataset key -> path of CuPL's file in its repository, per prompt variant.
CUPL_FILES = {
    "full": {
        "birdsnap": "all_prompts/full_prompts/bird_prompts_full.json",
        "caltech101": "all_prompts/full_prompts/cal_prompts_full.json",
        "stanford_cars": "all_prompts/full_prompts/cars_prompts_full.json",
        "cifar100": "all_prompts/full_prompts/cifar100_prompts_full.json",
        "dtd": "all_prompts/full_prompts/texture_prompts_full.json",
        "fgvc_aircraft": "all_prompts/full_prompts/airplane_prompts_full.json",
        "oxford_flowers": "all_prompts/full_prompts/flower_prompts_full.json",
        "food101": "all_prompts/full_prompts/food_prompts_full.json",
        "imagenet": "imagenet_prompts/CuPL_image_prompts.json",
        "oxford_pets": "all_prompts/full_prompts/pets_prompts_full.json",
        "resisc45": "all_prompts/full_prompts/res45_prompts_full.json",
        "sun397": "all_prompts/full_prompts/sun_prompts_full.json",
        "ucf101": "all_prompts/full_prompts/ucf_prompts_full.json",
    },
    "base": {
        "birdsnap": "all_prompts/base_prompts/bird_prompts_base.json",
        "caltech101": "all_prompts/base_prompts/cal_prompts_base.json",
        "stanford_cars": "all_prompts/base_prompts/cars_prompts_base.json",
        "cifar100": "all_prompts/base_prompts/cifar100_prompts_base.json",
        "dtd": "all_prompts/base_prompts/texture_prompts_base.json",
        "fgvc_aircraft": "all_prompts/base_prompts/airplane_prompts_base.json",
        "oxford_flowers": "all_prompts/base_prompts/flower_prompts_base.json",
        "food101": "all_prompts/base_prompts/food_prompts_base.json",
        "imagenet": "all_prompts/base_prompts/imagenet_prompts_base.json",
        "oxford_pets": "all_prompts/base_prompts/pet_prompts_base.json",
        "resisc45": "all_prompts/base_prompts/res45_prompts_base.json",
        "sun397": "all_prompts/base_prompts/sun_prompts_base.json",
        "ucf101": "all_prompts/base_prompts/ucf_prompts_base.json",
    },
}


def download(url: str, target: str) -> dict:
    """Fetch a CuPL JSON, check that it is ``{class: [sentences]}``, write it atomically; returns the table."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        payload = response.read()
    table = json.loads(payload.decode("utf-8"))
    if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
        raise ValueError(f"{url} is not a CuPL description file ({{class: [sentences]}})")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(f"{target}.tmp", "wb") as f:
        f.write(payload)
    os.replace(f"{target}.tmp", target)
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", choices=sorted(CUPL_FILES["full"]),
                        help="dataset key (repeatable); default: all 13")
    parser.add_argument("--variant", choices=sorted(CUPL_FILES), default="full", help="CuPL prompt set (default full)")
    parser.add_argument("--dest", default=os.path.join(REPO_ROOT, "descriptions"), help="output folder")
    parser.add_argument("--base-url", default=CUPL_BASE_URL, help="mirror of CuPL's repository (default: GitHub)")
    parser.add_argument("--force", action="store_true", help="replace files that already exist")
    parser.add_argument("--list", action="store_true", help="print dataset keys and URLs, download nothing")
    args = parser.parse_args(argv)
    base_url = args.base_url if args.base_url.endswith("/") else args.base_url + "/"
    failed = []
    for key in args.dataset or sorted(CUPL_FILES[args.variant]):
        url = base_url + CUPL_FILES[args.variant][key]
        target = os.path.join(args.dest, f"{key}.json")
        if args.list:
            print(f"{key}\t{url}")
            continue
        if os.path.exists(target) and not args.force:
            print(f"{key}: {target} exists (--force replaces it)")
            continue
        try:
            table = download(url, target)
        except Exception as err:  # network / HTTP / JSON errors: report every dataset, then fail
            failed.append(key)
            print(f"{key}: FAILED to fetch {url}: {err}", file=sys.stderr)
            continue
        sentences = sum(len(v) for v in table.values())
        print(f"{key}: {len(table)} classes, {sentences} sentences -> {target}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
