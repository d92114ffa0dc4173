"""Inference: multi-scale CAMs (seeds), pseudo masks (dense CRF, region voting), their file formats."""
