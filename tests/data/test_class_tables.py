"""Class tables: VOC order and prompt variants, COCO official-id mapping and its lookup tables."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semples.data import DataError
from semples.data.classes import (
    COCO_NAMES,
    COCO_OFFICIAL_IDS,
    VOC_NAMES,
    class_matcher,
    coco_classes,
    coco_contiguous_to_official_lut,
    coco_official_to_contiguous_lut,
    custom_classes,
    normalise_class_name,
    voc_classes,
)


def test_voc_table_order_and_prompt_variants():
    plain = voc_classes()
    assert len(plain) == 20
    assert plain.names[0] == "aeroplane" and plain.names[14] == "person" and plain.names[19] == "tvmonitor"
    assert plain.prompt_names[10] == "dining table" and plain.prompt_names[15] == "potted plant"
    assert plain.prompt_names[19] == "tv monitor" and plain.prompt_names[14] == "person"
    clims = voc_classes("clims")
    assert clims.prompt_names[14] == "player"
    assert [a for a, b in zip(plain.prompt_names, clims.prompt_names) if a != b] == ["person"]
    assert clims.names == VOC_NAMES  # canonical names never change


def test_coco_table_is_official_order_with_gaps():
    table = coco_classes()
    assert len(table) == 80 and len(set(COCO_OFFICIAL_IDS)) == 80
    assert list(COCO_OFFICIAL_IDS) == sorted(COCO_OFFICIAL_IDS) and COCO_OFFICIAL_IDS[-1] == 90
    unused = sorted(set(range(1, 91)) - set(COCO_OFFICIAL_IDS))
    assert unused == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]
    assert table.names[COCO_OFFICIAL_IDS.index(67)] == "dining table"
    assert coco_classes("clims").prompt_names[0] == "player"


def test_coco_table_matches_the_fixture_categories(coco128):
    cats = json.loads((coco128 / "annotations" / "instances_train2017.json").read_text())["categories"]
    assert [(c["id"], c["name"]) for c in sorted(cats, key=lambda c: c["id"])] == list(zip(COCO_OFFICIAL_IDS,
                                                                                         COCO_NAMES))


def test_official_contiguous_luts_round_trip():
    to_c, to_o = coco_official_to_contiguous_lut(), coco_contiguous_to_official_lut()
    official = np.array([0, 1, 13, 90, 255], dtype=np.uint8)
    assert to_c[official].tolist() == [0, 1, 12, 80, 255]
    assert to_o[to_c[official]].tolist() == official.tolist()
    assert to_c[12] == 255 and to_c[83] == 255  # unused official ids become ignore


def test_prompt_names_file_and_errors(tmp_path):
    f = tmp_path / "names.txt"
    f.write_text("\n".join(f"thing {i}" for i in range(20)) + "\n\n")
    assert voc_classes(str(f)).prompt_names[3] == "thing 3"
    f.write_text("one\ntwo\n")
    with pytest.raises(DataError, match="has 2 prompt names, the dataset has 20 classes"):
        voc_classes(str(f))
    with pytest.raises(DataError, match="unknown prompt_names 'fancy'.*plain, clims"):
        voc_classes("fancy")


def test_custom_classes_and_matcher():
    table = custom_classes(["traffic_cone", "Dog"])
    assert table.prompt_names == ("traffic cone", "Dog")
    match = class_matcher(table)
    assert match[normalise_class_name("Traffic Cone")] == 0 and match[normalise_class_name("dog")] == 1
    with pytest.raises(DataError, match="empty"):
        custom_classes([])
