"""`semples export`: label PNGs to COCO RLE json, VOC test-server RGB PNGs, or index PNGs."""

from __future__ import annotations

import argparse

from semples.commands.train import add_config_arguments, load_cli_config
from semples.errors import UsageError

HELP = "export label PNGs: COCO RLE json, VOC test-server RGB PNGs, index PNGs from RGB (or from COCO json)"
DESCRIPTION = """\
Convert a folder of label PNGs (pseudo masks, eval-seg predictions, `semples predict` masks: 0 background,
1..K classes, 255 ignore) into the formats other tools read:

  --to coco      one COCO json: images, categories (the dataset's category ids: COCO's official 1..90 ids for
                 data.dataset coco, label k = id k otherwise), one RLE annotation per image and class; ignore pixels
                 as each image's "ignore_rle"
  --to voc-rgb   RGB PNGs in the VOC palette, one per image (VOC test server: put them under
                 results/VOC2012/Segmentation/comp6_test_cls/ and tar that folder)
  --to index     index PNGs (uint8 labels, VOC palette) from RGB palette PNGs, or from a COCO json of --to coco

  semples export --masks preds/masks --to coco --out preds/coco.json
  semples export --config voc_semples --masks runs/voc_semples/segment/eval/test/predictions/multi_scale \\
                 --to voc-rgb --out results/VOC2012/Segmentation/comp6_test_cls
  semples export --masks rgb_masks/ --to index --out index_masks/
  semples export --masks preds/coco.json --to index --out back/        (the way back: the same labels)

Class names come from the folder's manifest.json (every semples folder has one), else from --config's dataset."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--masks", metavar="DIR", help="folder of label PNGs (or, for --to index, a COCO json)")
    p.add_argument("--to", choices=["coco", "voc-rgb", "index"], help="output format (required)")
    p.add_argument("--out", metavar="PATH", help="output json (coco) or folder (required)")
    add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    if not (args.masks and args.to and args.out):
        raise UsageError("pass --masks DIR --to coco|voc-rgb|index --out PATH (see semples export --help)")
    from semples import steps

    r = steps.export.run(load_cli_config(args), args.masks, args.to, args.out)
    extra = f", {r.annotations} annotations" if r.to == "coco" else ""
    print(f"export: {r.images} images{extra} -> {r.out} ({r.to})")
    return 0
