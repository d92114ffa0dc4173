"""The toy CLIP: a small open_clip CLIP trained contrastively on the synthetic co-occurrence world.

Captions name the objects and usually omit the background (as web captions do), so the CLIP learns the bias
SemPLeS removes: a class's text lies closer to its co-occurring background. Shipped weights live in
``semples/assets/clip/synth-clip`` (``clip.arch: synth-clip``); `train_synth_clip` reproduces them and
`probe_clip` measures zero-shot accuracy and the bias.

Imports run one way: this package uses data/, models/, stages/ and engine/; nothing below it imports it.
"""

from semples.synthclip.config import (
    SynthClipConfig,
    dump_synth_clip_config,
    load_synth_clip_config,
)
from semples.synthclip.probe import format_probe, probe_clip
from semples.synthclip.properties import PROPERTIES, THRESHOLDS, check_properties, format_properties
from semples.synthclip.train import ContrastiveStage, TrainClipResult, export_local_dir, train_synth_clip

__all__ = [
    "PROPERTIES",
    "THRESHOLDS",
    "ContrastiveStage",
    "SynthClipConfig",
    "TrainClipResult",
    "check_properties",
    "dump_synth_clip_config",
    "export_local_dir",
    "format_probe",
    "format_properties",
    "load_synth_clip_config",
    "probe_clip",
    "train_synth_clip",
]
