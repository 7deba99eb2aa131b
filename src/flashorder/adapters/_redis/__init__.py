"""What every Redis adapter shares: the script batcher and the translation of Redis errors."""
