"""hypersd: an open implementation of Hyper-SD (Ren et al., 2024, arXiv 2404.13686)."""

__version__ = "0.1.0"
