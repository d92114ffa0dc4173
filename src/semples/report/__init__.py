"""Reports: evaluation outputs (metrics.json / metrics.md), threshold curves and sample figures. Sits on top of
every other room of the package."""
