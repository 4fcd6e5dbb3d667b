from types import SimpleNamespace

import pytest

from dedup_assets.embedding_stage import pass_size


@pytest.mark.parametrize(("device", "configured", "expected"), [
    ("cpu", None, 8),  # the CPU runtimes: as fast as 16 or 32, half the memory of 16
    ("cuda", None, 256), ("cuda:1", None, 256),  # a GPU needs large passes to be busy
    ("cuda", 32, 32), ("cpu", 64, 64),  # a configured size wins
])
def test_images_per_pass_follow_the_device_unless_configured(device, configured, expected):
    assert pass_size(configured, SimpleNamespace(device=device)) == expected


def test_a_pass_of_no_images_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        pass_size(0, SimpleNamespace(device="cpu"))
