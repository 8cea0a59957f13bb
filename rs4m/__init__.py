"""rs4m: build RS-4M style remote-sensing pretraining corpora."""

__version__ = "0.1.0"
