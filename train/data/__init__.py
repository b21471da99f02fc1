"""Training data: sources (manifest, indexing, decoding), the Debian and Spotify collectors, ClipDataset."""
