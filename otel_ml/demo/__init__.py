"""The self-contained demo and the pieces the end-to-end test shares with it."""
