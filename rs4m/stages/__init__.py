"""The build stages: scan → tile → dedup → catalog. Each reads the previous stage's files and can be re-run."""
