import numpy as np
import pytest

from attributions.blur import blur_matrix, default_blur_sigma, gaussian_blur


@pytest.mark.parametrize("shape, sigma", [((3, 16, 16, 1), 1.6), ((2, 20, 13, 3), 2.5), ((2, 5, 7, 2), 4.0), ((1, 9, 9, 1), 0.5)])
def test_gaussian_blur_equals_scipys_gaussian_filter_with_reflected_edges(shape, sigma):
    from scipy import ndimage

    images = np.random.default_rng(0).random(shape).astype(np.float32)
    expected = ndimage.gaussian_filter(images.astype(np.float64), sigma=(0, sigma, sigma, 0), mode="reflect", truncate=4.0)
    np.testing.assert_allclose(gaussian_blur(images, sigma), expected, rtol=0, atol=1e-6)


def test_blur_keeps_constant_images_and_each_images_total():
    flat = np.full((2, 8, 8, 3), 0.25, np.float32)
    np.testing.assert_allclose(gaussian_blur(flat, 3.0), flat, atol=1e-7)
    np.testing.assert_allclose(blur_matrix(11, 2.0).sum(axis=1), 1.0, atol=1e-6)  # each output pixel: a weighted mean
    assert default_blur_sigma(224, 224) == pytest.approx(22.4) and default_blur_sigma(16, 32) == pytest.approx(1.6)
    with pytest.raises(ValueError, match=r"takes \(batch, height, width, channels\) images; got shape \(8, 8\)"):
        gaussian_blur(np.zeros((8, 8)), 1.0)
