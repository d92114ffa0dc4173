"""Hostile but realistic inputs through the command line, each judged clean or not (issue 12).

Every case runs `semples` as a user would (``semples.cli.main`` in this process, or a second process where the case
is about processes) on generated files in a temporary folder, and is judged:

    clean      the expected outcome: one ``semples <verb>: error: ...`` line naming the file or key and the problem
               (exit status != 0), or a correct result where the input is valid
    silent     exit status 0 with a wrong result, or an error that was due and did not come
    traceback  an exception escaped, or the message is not the one line it should be

Only the command line and files are used, so the same script judges any checkout: ``PYTHONPATH=<checkout>/src
python benchmarks/reliability_cases.py``. ``--json PATH`` writes every case's verdict; ``-k WORD`` runs the cases
whose name holds WORD.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

TINY = ["--config", "tiny"]
VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 64}


# ---------------------------------------------------------------------------------------------------- harness
@dataclass
class Run:
    code: int | None
    out: str
    err: str
    exc: str | None = None


def cli(*argv: str) -> Run:
    """`semples ARGV` in this process: exit status, stdout, stderr, and the traceback of an escaped exception."""
    from semples.cli import main

    out, err = io.StringIO(), io.StringIO()
    exc = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - a traceback is what the case judges
            code, exc = None, traceback.format_exc(limit=3)
    return Run(code, out.getvalue(), err.getvalue(), exc)


def process(*argv: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "semples", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def error_line(run: Run, *parts: str) -> tuple[str, str]:
    """An expected error: clean when the last stderr line is ``semples <verb>: error: ...`` holding `parts`."""
    if run.exc is not None or "Traceback" in run.err:
        return "traceback", (run.exc or run.err).strip().splitlines()[-1][:160]
    if run.code == 0:
        return "silent", "exit 0"
    last = run.err.strip().splitlines()[-1] if run.err.strip() else ""
    if last.startswith("semples ") and "error:" in last and all(p in last for p in parts):
        return "clean", last[:160]
    return "traceback", f"exit {run.code}, message: {last[:140]!r}"


def result(ok: bool, what: str, run: Run | None = None) -> tuple[str, str]:
    """A valid input: clean when it ran (exit 0) and the result is right."""
    if run is not None and (run.exc is not None or run.code not in (0, None)):
        return "traceback", (run.exc or run.err).strip().splitlines()[-1][:160] if (run.exc or run.err) else "?"
    return ("clean" if ok else "silent"), what


def out_dir(tmp: Path) -> list[str]:
    return ["--set", f"output_dir={tmp}"]


_TRAINED: dict[str, Path] = {}


def trained_classify(tmp_root: Path) -> Path:
    """One tiny classify run shared by the cases that hand a generator in."""
    if "run" not in _TRAINED:
        base = tmp_root / "shared"
        assert cli("train", "--stage", "classify", *TINY, *out_dir(base)).code == 0
        _TRAINED["run"] = base / "tiny" / "classify"
    return _TRAINED["run"]


def edited_checkpoint(tmp: Path, source: Path, **changes) -> Path:
    ckpt = torch.load(source / "checkpoint.pt", weights_only=True)
    ckpt.update(changes)
    path = tmp / "edited" / "checkpoint.pt"
    path.parent.mkdir(parents=True)
    torch.save(ckpt, path)
    return path


def folder_dataset(root: Path, n: int = 4, labels: str | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(root / "images" / f"i{k}.jpg")
    (root / "labels.csv").write_text(labels or "".join(f"i{k}.jpg,{'cat' if k % 2 else 'dog'}\n" for k in range(n)))
    return root


def cams_folder(tmp: Path) -> Path:
    assert cli("cams", "--generator", "random", *TINY, *out_dir(tmp), "--no-progress").code == 0
    return tmp / "tiny" / "cams" / "val"


def tiny_backbone(**overrides):
    import timm

    torch.manual_seed(3)
    return timm.create_model("deit_small_patch16_224", pretrained=False, num_classes=10, **{**VIT, **overrides})


# ---------------------------------------------------------------------------------------------------- cases
CASES: dict[str, tuple[str, Callable[[Path], tuple[str, str]]]] = {}


def case(category: str):
    def register(fn):
        CASES[fn.__name__] = (category, fn)
        return fn
    return register


def _backbone_run(tmp: Path, state: dict) -> Run:
    path = tmp / "backbone.pth"
    torch.save(state, path)
    return cli("train", "--stage", "classify", *TINY, *out_dir(tmp), "--set", f"generator.backbone_checkpoint={path}",
               "--set", "classify.max_steps=0")


@case("silent")
def backbone_file_matching_nothing(tmp):
    return error_line(_backbone_run(tmp, {f"layer{i}.weight": torch.randn(4, 4) for i in range(4)}), "backbone")


@case("silent")
def backbone_file_missing_a_block(tmp):
    state = {k: v for k, v in tiny_backbone().state_dict().items() if not k.startswith("blocks.1.")}
    return error_line(_backbone_run(tmp, state), "backbone")


@case("silent")
def backbone_file_of_a_deeper_model(tmp):
    return error_line(_backbone_run(tmp, tiny_backbone(depth=4).state_dict()), "backbone")


@case("silent")
def backbone_file_with_module_prefix_in_a_wrapper(tmp):
    vit = tiny_backbone()
    run = _backbone_run(tmp, {"state_dict": {"module." + k: v for k, v in vit.state_dict().items()}})
    if run.code != 0:
        return error_line(run)
    state = torch.load(tmp / "tiny" / "classify" / "checkpoint.pt", weights_only=True)["modules"]["mask_generator"]
    ok = torch.equal(state["blocks.1.attn.qkv.weight"], vit.state_dict()["blocks.1.attn.qkv.weight"])
    return result(ok, "weights loaded" if ok else "the file's weights are not in the model", run)


def _segmenter_backbone_run(tmp: Path, state: dict) -> Run:
    from semples.config import load_config
    from semples.data import build_dataset
    from semples.data.io import write_mask_png

    cfg = load_config("tiny")
    data = build_dataset(cfg.data, cfg.data.train_split)
    (tmp / "masks").mkdir()
    for i, image_id in enumerate(data.ids):  # the dataset's own masks as the pseudo masks
        write_mask_png(tmp / "masks" / f"{image_id}.png", data.load_mask(i))
    path = tmp / "backbone.pth"
    torch.save(state, path)
    return cli("train-seg", *TINY, "--pseudo-masks", str(tmp / "masks"), *out_dir(tmp), "--set",
               f"segment.model.backbone_checkpoint={path}", "--no-eval")


@case("silent")
def segmenter_backbone_file_matching_nothing(tmp):
    return error_line(_segmenter_backbone_run(tmp, {f"layer{i}.weight": torch.randn(4, 4) for i in range(4)}),
                      "backbone.pth", "fit")


@case("silent")
def generator_of_six_other_classes(tmp):
    path = edited_checkpoint(tmp, trained_classify(tmp.parent),
                             classes=["cat", "dog", "horse", "sheep", "cow", "bird"])
    return error_line(cli("cams", "--generator", str(path), *TINY, *out_dir(tmp), "--no-progress"), str(path))


@case("silent")
def unfinished_generator_as_input(tmp):
    path = edited_checkpoint(tmp, trained_classify(tmp.parent), finished=False)
    return error_line(cli("train", "--stage", "match", "--generator", str(path), *TINY, *out_dir(tmp)), str(path))


def _concurrent(tmp: Path, second: list[str]) -> tuple[str, str]:
    run = tmp / "tiny" / "classify"
    args = ["train", "--stage", "classify", *TINY, *out_dir(tmp), "--set", "classify.epochs=10"]
    first = process(*args)
    while not (run / "manifest.json").exists():  # the first one is training
        if first.poll() is not None:
            return "traceback", "the first training ended early"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGSTOP)  # hold it mid-run while the second one starts
    try:
        other = process(*args, *second)
        _, err = other.communicate(timeout=900)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    first.communicate(timeout=900)
    steps = [json.loads(line).get("step") for line in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(line).get("type") != "epoch"]
    doubled = steps != sorted(set(steps))
    if other.returncode == 0 or doubled:
        return "silent", f"both trained (second exit {other.returncode}; metrics.jsonl in order: {not doubled})"
    return error_line(Run(other.returncode, "", err), str(run))


@case("silent")
def two_trainings_into_one_folder(tmp):
    return _concurrent(tmp, [])


@case("silent")
def a_resume_while_the_run_trains(tmp):
    return _concurrent(tmp, ["--resume"])


@case("silent")
def a_force_with_another_lr_while_the_run_trains(tmp):
    return _concurrent(tmp, ["--force", "--set", "classify.lr=0.005"])


def _png_header(path: Path, width: int, height: int) -> None:
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))


@case("silent")
def data_check_of_a_144_megapixel_png_five_times(tmp):
    import warnings

    root = folder_dataset(tmp / "data", n=8)
    _png_header(root / "images" / "i5.jpg", 12000, 12000)
    refused = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(5):
            run = cli("data", "check", str(root), "--workers", "4")
            refused += run.code == 1 and "too large" in run.out
    return result(refused == 5, f"refused {refused} of 5 times")


@case("silent")
def two_images_one_id_in_a_folder_dataset(tmp):
    root = folder_dataset(tmp / "data")
    Image.new("RGB", (32, 24)).save(root / "images" / "i1.png")
    (root / "labels.csv").write_text("i0.jpg,dog\ni1.jpg,cat\ni1.png,dog\ni2.jpg,dog\ni3.jpg,cat\n")
    run = cli("data", "check", str(root))
    return result(run.code == 1 and "share the id" in run.out, "refused" if run.code == 1 else "one merged item", run
                  if run.exc else None)


@case("silent")
def device_cuda_without_cuda(tmp):
    if torch.cuda.is_available():
        return "skipped", "this machine has CUDA"
    return error_line(cli("train", "--stage", "classify", *TINY, *out_dir(tmp), "--set", "device=cuda"), "cuda")


@case("silent")
def cams_with_a_negative_limit(tmp):
    return error_line(cli("cams", "--generator", "random", *TINY, *out_dir(tmp), "--limit", "-3"), "limit")


@case("silent")
def a_truncated_cam_file_on_a_rerun(tmp):
    folder = cams_folder(tmp)
    path = sorted(folder.glob("*.npz"))[0]
    path.write_bytes(path.read_bytes()[:200])
    run = cli("cams", "--generator", "random", *TINY, *out_dir(tmp), "--no-progress")
    try:
        with np.load(path) as f:
            ok = f["cams"].ndim == 3
    except Exception:  # noqa: BLE001
        ok = False
    return result(ok, "recomputed" if ok else "the truncated file was kept", run)


def _config(tmp, override):
    return error_line(cli("train", "--stage", "classify", *TINY, *out_dir(tmp), "--set", override),
                      override.split("=")[0])


for _name, _override in [("batch_size_zero", "classify.batch_size=0"),
                         ("batch_size_negative", "classify.batch_size=-4"),
                         ("grad_accum_zero", "classify.grad_accum=0"), ("lr_nan", "classify.lr=.nan"),
                         ("lr_negative", "classify.lr=-0.001"), ("num_workers_negative", "data.num_workers=-1")]:
    def _make(override):
        return lambda tmp: _config(tmp, override)
    CASES[f"config_{_name}"] = ("traceback", _make(_override))


@case("traceback")
def output_dir_is_a_file(tmp):
    (tmp / "runs").write_text("x")
    return error_line(cli("train", "--stage", "classify", *TINY, "--set", f"output_dir={tmp / 'runs'}"), "runs")


@case("traceback")
def output_dir_is_unwritable(tmp):
    if os.geteuid() == 0:  # chmod does not stop root: /proc is a place nothing can create folders in
        return error_line(cli("train", "--stage", "classify", *TINY, "--set", "output_dir=/proc/semples-runs"),
                          "/proc/semples-runs")
    (tmp / "ro").mkdir(mode=0o500)
    return error_line(cli("train", "--stage", "classify", *TINY, "--set", f"output_dir={tmp / 'ro'}"), "ro")


@case("traceback")
def non_utf8_yaml(tmp):
    path = tmp / "cfg.yaml"
    path.write_bytes("_base_: tiny\nexperiment: caf\xe9\n".encode("latin-1"))
    return error_line(cli("train", "--stage", "classify", "--config", str(path)), str(path))


def _damaged_cam(tmp, verb: str, damage: str):
    folder = cams_folder(tmp)
    path = sorted(folder.glob("*.npz"))[1]
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:
        buf = io.BytesIO()
        np.savez(buf, cams=np.array([None], dtype=object), classes=np.array([0]))
        path.write_bytes(buf.getvalue())
    if verb == "eval-seeds":
        return error_line(cli("eval-seeds", *TINY, *out_dir(tmp), "--no-progress"), str(path))
    return error_line(cli("pseudo-masks", "--cams", str(folder), "--method", "threshold", "--threshold", "0.3",
                          *TINY, *out_dir(tmp), "--no-progress"), str(path))


for _verb in ("eval-seeds", "pseudo-masks"):
    for _damage in ("truncated", "object-array"):
        def _make(verb, damage):
            return lambda tmp: _damaged_cam(tmp, verb, damage)
        CASES[f"{_damage}_cam_file_in_{_verb}".replace("-", "_")] = ("traceback", _make(_verb, _damage))


@case("traceback")
def corrupt_run_json(tmp):
    (tmp / "tiny").mkdir()
    (tmp / "tiny" / "run.json").write_text('{"steps": {"train": ')
    return error_line(cli("run", *TINY, *out_dir(tmp)), "run.json")


@case("traceback")
def checkpoint_with_malformed_modules(tmp):
    path = edited_checkpoint(tmp, trained_classify(tmp.parent), modules={"mask_generator": "weights"})
    return error_line(cli("cams", "--generator", str(path), *TINY, *out_dir(tmp), "--no-progress"), str(path))


@case("traceback")
def sam_checkpoint_whose_name_does_not_tell_the_variant(tmp):
    path = tmp / "weights.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(32, 3, 16, 16)}, path)
    folder = cams_folder(tmp)
    return error_line(cli("pseudo-masks", "--cams", str(folder), "--method", "region-vote", "--sam-checkpoint",
                          str(path), "--threshold", "0.3", *TINY, *out_dir(tmp), "--no-progress"), str(path))


@case("traceback")
def csv_field_over_the_csv_limit(tmp):
    root = folder_dataset(tmp / "data", labels="i0.jpg,dog\ni1.jpg," + "c" * 200_000 + "\ni2.jpg,dog\ni3.jpg,cat\n")
    run = cli("data", "check", str(root))
    return result(run.code == 1 and "labels.csv:2" in run.out, "named in the report", run if run.exc else None)


@case("traceback")
def json_labels_nested_thousands_deep(tmp):
    root = folder_dataset(tmp / "data")
    (root / "labels.csv").unlink()
    (root / "labels.json").write_text("[" * 100_000 + "]" * 100_000)
    run = cli("data", "check", str(root))
    return result(run.code == 1 and "labels.json" in run.out, "named in the report", run if run.exc else None)


@case("traceback")
def coco_image_entry_without_width(tmp):
    root = tmp / "coco"
    (root / "images" / "train2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    Image.new("RGB", (40, 30)).save(root / "images" / "train2017" / "000000000001.jpg")
    data = {"images": [{"id": 1, "file_name": "000000000001.jpg", "height": 30}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 4.0,
                             "segmentation": [[1, 1, 3, 1, 3, 3, 1, 3]]}],
            "categories": [{"id": 1, "name": "person"}]}
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(data))
    run = cli("data", "check", str(root), "--dataset", "coco", "--split", "train2017")
    return result(run.code == 1 and "width" in run.out, "named in the report", run if run.exc else None)


@case("traceback")
def disk_full_during_a_checkpoint_write(tmp):
    args = ["train", "--stage", "classify", *TINY, *out_dir(tmp)]
    if cli(*args).code != 0:
        return "traceback", "the first training failed"
    ckpt = tmp / "tiny" / "classify" / "checkpoint.pt"
    before = ckpt.read_bytes()
    real = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    os.fsync = full
    try:
        run = cli(*args, "--force")
    finally:
        os.fsync = real
    verdict = error_line(run, "No space left")
    if verdict[0] == "clean" and ckpt.read_bytes() != before:
        return "silent", "the finished checkpoint was lost"
    return verdict


@case("traceback")
def a_real_full_disk_during_a_checkpoint_write(tmp):
    """A 1 MiB tmpfs as output_dir: the first checkpoint (~0.7 MB) fits, a second beside it does not."""
    disk = tmp / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        return "skipped", "cannot mount a small tmpfs here (needs root)"
    try:
        args = ["train", "--stage", "classify", *TINY, *out_dir(disk)]
        if cli(*args).code != 0:
            return "skipped", "the first checkpoint does not fit on 1 MiB"
        ckpt = disk / "tiny" / "classify" / "checkpoint.pt"
        before = ckpt.read_bytes()
        verdict = error_line(cli(*args, "--force"), "No space left")
        if verdict[0] == "clean" and ckpt.read_bytes() != before:
            return "silent", "the finished checkpoint was lost"
        return verdict
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


@case("smaller")
def relative_root_with_classes_txt(tmp):
    root = folder_dataset(tmp / "data" / "mine")
    (root / "classes.txt").write_text("dog\ncat\n")
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        run = cli("data", "check", "data/mine")
    finally:
        os.chdir(cwd)
    return result(run.code == 0 and "OK" in run.out, "read" if run.code == 0 else run.out.strip()[-120:], run
                  if run.exc else None)


@case("smaller")
def sigterm_during_training(tmp):
    run = tmp / "tiny" / "classify"
    proc = process("train", "--stage", "classify", *TINY, *out_dir(tmp), "--set", "classify.epochs=30")
    while not (run / "manifest.json").exists():
        if proc.poll() is not None:
            return "traceback", "training ended early"
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=300)
    status = json.loads((run / "manifest.json").read_text())["status"]
    ok = proc.returncode == 143 and status.startswith("interrupted")
    return ("clean" if ok else "silent"), f"exit {proc.returncode}, manifest {status[:40]!r}"


@case("smaller")
def killed_write_leaves_no_orphan_after_the_next_run(tmp):
    folder = tmp / "tiny" / "classify"
    folder.mkdir(parents=True)
    started = tmp / "started"
    writer = ("import sys, time\nfrom semples.utils.checkpoint_io import _atomic\n"
              "def slow(f):\n    f.write(b'x' * 1000); f.flush(); open(sys.argv[2], 'w').write('1'); time.sleep(300)\n"
              "_atomic(sys.argv[1], slow)\n")
    proc = subprocess.Popen([sys.executable, "-c", writer, str(folder / "checkpoint.pt"), str(started)])
    while not started.exists():
        if proc.poll() is not None:
            return "traceback", "the writer could not be started (no semples.utils.checkpoint_io._atomic here)"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    run = cli("train", "--stage", "classify", *TINY, *out_dir(tmp))
    orphans = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    return result(not orphans, f"{len(orphans)} orphan(s) left", run)


@case("smaller")
def outputs_follow_the_umask(tmp):
    old = os.umask(0o022)
    try:
        run = cli("train", "--stage", "classify", *TINY, *out_dir(tmp))
    finally:
        os.umask(old)
    mode = (tmp / "tiny" / "classify" / "checkpoint.pt").stat().st_mode & 0o777
    return result(mode == 0o644, f"checkpoint mode {mode:o} under umask 022", run)


@case("smaller")
def unknown_class_names_its_own_row(tmp):
    root = folder_dataset(tmp / "data", labels="i0.jpg,dog\ni1.jpg,cat\ni2.jpg,dog\ni3.jpg,cat\ni1.jpg,zebra\n")
    (root / "classes.txt").write_text("dog\ncat\n")  # without it every name in labels.csv is a class
    run = cli("data", "check", str(root))
    return result("labels.csv:5: unknown class 'zebra'" in run.out, "labels.csv:5 named" if "labels.csv:5" in run.out
                  else "another line named", run if run.exc else None)


@case("found")
def an_override_leaking_through_a_yaml_anchor(tmp):
    import yaml

    run = cli("train", "--print-config", *TINY, "--set", "match.epochs=3")
    cfg = yaml.safe_load(run.out) if run.code == 0 else {}
    ok = cfg.get("match", {}).get("epochs") == 3 and cfg.get("classify", {}).get("epochs") == 1
    return result(ok, "classify.epochs " + str(cfg.get("classify", {}).get("epochs")), run)


@case("found")
def an_id_naming_two_image_files(tmp):
    root = folder_dataset(tmp / "data", labels="i0,dog\ni1,cat\ni2,dog\ni3,cat\n")
    Image.new("RGB", (32, 24)).save(root / "images" / "i1.png")
    run = cli("data", "check", str(root))
    return result(run.code == 1 and "could be any of" in run.out, "refused" if run.code == 1 else "one picked silently",
                  run if run.exc else None)


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, help="write every verdict here")
    p.add_argument("-k", dest="only", help="only the cases whose name holds this")
    args = p.parse_args(argv)
    import semples

    print(f"semples from {Path(semples.__file__).parent}")
    verdicts = {}
    with tempfile.TemporaryDirectory() as root:
        for n, (name, (category, fn)) in enumerate(CASES.items()):
            if args.only and args.only not in name:
                continue
            tmp = Path(root) / f"case{n:02d}"
            tmp.mkdir()
            t0 = time.perf_counter()
            try:
                verdict, detail = fn(tmp)
            except Exception as e:  # noqa: BLE001 - the harness itself met an escaped error
                verdict, detail = "traceback", f"{type(e).__name__}: {str(e)[:120]}"
            verdicts[name] = {"category": category, "verdict": verdict, "detail": detail,
                              "seconds": round(time.perf_counter() - t0, 1)}
            print(f"{verdict:9s} {category:9s} {name}: {detail}", flush=True)
    print()
    for category in dict.fromkeys(v["category"] for v in verdicts.values()):
        rows = [v for v in verdicts.values() if v["category"] == category and v["verdict"] != "skipped"]
        clean = sum(v["verdict"] == "clean" for v in rows)
        print(f"{category:9s} {clean:3d} / {len(rows):3d} clean")
    tried = [v for v in verdicts.values() if v["verdict"] != "skipped"]
    print(f"{'all':9s} {sum(v['verdict'] == 'clean' for v in tried):3d} / {len(tried):3d} clean "
          f"({sum(v['verdict'] == 'skipped' for v in verdicts.values())} skipped on this machine)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(verdicts, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
