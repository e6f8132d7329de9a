"""Lighting: synthetic relighting on a landmark-fitted face geometry (relight), the siamese lighting network (net)
and its training on relit pairs (train)."""
