"""Departments, matters, subjects and devices: who is supervised, by whom, under what law."""
