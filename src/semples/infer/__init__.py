"""Inference: the one per-image runner (`runner`) and the one multi-scale + flip (`views`); per-image tasks for seeds
of a mask generator (`cams`), FMA's CLIP CAMs (`clip_cams`), CAA (`caa`) and pseudo masks (`pseudo_masks`: dense CRF
`crf`, region voting `region_vote`); the final model's inference (`segment`); the CAM file format (`cam_io`)."""
