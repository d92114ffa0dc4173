"""A mask generator handed to a step must fit it (issue 12, item 2): the class *names* it was trained for are
compared with the dataset's (not only their number), and a checkpoint of an unfinished run is refused unless
--allow-unfinished asks for it."""

from __future__ import annotations

import pytest
import torch

from semples.cli import main
from semples.utils.checkpoint_io import read_checkpoint


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("inputs")
    assert main(["train", "--stage", "classify", "--config", "tiny", "--set", f"output_dir={out}"]) == 0
    return out, out / "tiny" / "classify"


def edited_copy(run, tmp_path, **changes):
    """A copy of the run's checkpoint with some records changed (what another run would have written)."""
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt.update(changes)
    path = tmp_path / "edited" / "checkpoint.pt"
    path.parent.mkdir()
    torch.save(ckpt, path)
    return path


def test_the_checkpoint_records_the_class_names(classify_run):
    out, run = classify_run
    ckpt = read_checkpoint(run)
    assert len(ckpt["classes"]) == 6 and ckpt["classes"][0] == "boat"


def test_a_generator_of_other_classes_with_the_same_count_is_refused(classify_run, tmp_path, capsys):
    out, run = classify_run
    other = ["cat", "dog", "horse", "sheep", "cow", "bird"]
    path = edited_copy(run, tmp_path, classes=other)
    base = ["--config", "tiny", "--set", f"output_dir={tmp_path}"]
    assert main(["cams", "--generator", str(path), *base]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"semples cams: error: {path}: trained for classes cat, dog")
    assert "only in the checkpoint: cat, dog" in err and "only in the dataset: boat" in err
    assert main(["train", "--stage", "match", "--generator", str(path), *base]) == 1
    assert "trained for classes cat" in capsys.readouterr().err
    assert not (tmp_path / "tiny" / "match").exists()  # refused before anything was written


def test_the_same_names_in_another_order_are_refused(classify_run, tmp_path, capsys):
    out, run = classify_run
    names = read_checkpoint(run)["classes"]
    path = edited_copy(run, tmp_path, classes=list(reversed(names)))
    assert main(["cams", "--generator", str(path), "--config", "tiny", "--set", f"output_dir={tmp_path}"]) == 1
    assert "the same names in another order" in capsys.readouterr().err


def test_an_unfinished_generator_is_refused_unless_asked(classify_run, tmp_path, capsys):
    out, run = classify_run
    path = edited_copy(run, tmp_path, finished=False)
    base = ["--config", "tiny", "--set", f"output_dir={tmp_path}"]
    for argv in (["cams", "--generator", str(path), *base],
                 ["train", "--stage", "match", "--generator", str(path), *base]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"{path}: the mask generator is of an unfinished classify run" in err
        assert "--resume" in err and "--allow-unfinished" in err
    assert main(["cams", "--generator", str(path), *base, "--allow-unfinished", "--no-progress"]) == 0
    assert main(["train", "--stage", "match", "--generator", str(path), *base, "--allow-unfinished"]) == 0
    assert read_checkpoint(tmp_path / "tiny" / "match")["inputs"]["generator"]["finished"] is False


def test_older_checkpoints_without_class_names_are_checked_on_the_count(classify_run, tmp_path, capsys, caplog):
    out, run = classify_run
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    del ckpt["classes"]
    path = tmp_path / "old" / "checkpoint.pt"
    path.parent.mkdir()
    torch.save(ckpt, path)
    base = ["--config", "tiny", "--set", f"output_dir={tmp_path}", "--no-progress"]
    with caplog.at_level("WARNING"):
        assert main(["cams", "--generator", str(path), *base]) == 0
    assert f"{path} records no class names" in caplog.text and "checked on the class count only" in caplog.text
    assert main(["cams", "--generator", str(path), *base, "--set", "data.synthetic.classes=[boat, plane]",
                 "--out", str(tmp_path / "two")]) == 1
    assert "trained for 6 classes, the dataset has 2" in capsys.readouterr().err
