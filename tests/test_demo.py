"""Tests of the `make demo` job."""

from PIL import Image

from svae import demo


def test_demo_scores_each_kind_of_residual_higher_under_its_own_model(tmp_path):
    result = demo.run(tmp_path, seed=3)
    own = "structured samples | structured model"
    assert result[own] > result["structured samples | factorised model"]
    own = "independent samples | factorised model"
    assert result[own] > result["independent samples | structured model"]
    with Image.open(result["figure"]) as figure:
        # 5 rows and 4 columns of 64x64 images shown 3x, 2-pixel gaps.
        assert figure.size == (4 * (192 + 2), 5 * (192 + 2))
