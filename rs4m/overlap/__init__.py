"""Overlap search without georeference: compact local features per tile, candidate pairs from hashed
descriptors with vote counting, and geometric verification of the candidates only."""

from rs4m.overlap.candidates import candidate_pairs, lsh_keys
from rs4m.overlap.features import Features, extract, extract_both
from rs4m.overlap.verify import Match, overlap, verify

__all__ = ["Features", "Match", "candidate_pairs", "extract", "extract_both", "lsh_keys", "overlap", "verify"]
