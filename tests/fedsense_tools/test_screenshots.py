"""The docs' TensorBoard screenshots: which tabs, and a clear refusal without Chromium."""

from __future__ import annotations

import pytest

from fedsense_tools import screenshots


def test_without_chromium_it_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(screenshots.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="apt-get install chromium"):
        screenshots.screenshots(tmp_path, tmp_path / "out")


def test_the_projector_is_pictured_only_when_the_run_recorded_one(tmp_path):
    (tmp_path / "tb").mkdir()
    assert screenshots.tabs_of(tmp_path) == ["custom_scalars", "images"]  # the headline first
    (tmp_path / "tb" / "projector_config.pbtxt").write_text("embeddings {}\n")
    assert screenshots.tabs_of(tmp_path) == ["custom_scalars", "images", "projector"]
