"""Datasets on disk: image folders with captions (samples.jsonl or side-car .txt files)."""
