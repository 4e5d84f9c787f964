"""Clues, evidence and cases: what a detector finding becomes for the departments."""
