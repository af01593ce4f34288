"""Tests of weight-based composition between attention heads (attnlab.heads.composition)."""
