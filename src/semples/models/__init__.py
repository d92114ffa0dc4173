"""Models: the frozen CLIP and its prompt text path, mask generators, (later) segmenters and region sources."""
