"""Flower ServerApp, command line and run outputs of fedsense."""
