"""The transfer engine: a disk read as parallel HTTP ranges, checksummed, checkpointed and resumable."""
