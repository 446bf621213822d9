"""Flower ClientApp of fedsense: Messages in, core calls, Messages out."""
