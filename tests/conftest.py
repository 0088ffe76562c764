import pytest
import torch


@pytest.fixture(scope="session")
def lite0():
    """(model, preprocess) of EfficientNet-Lite0 with its ImageNet weights, loaded once."""
    from shapcam_widgets import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def chelsea():
    """scikit-image's photo of a cat, H x W x 3 uint8 (300 x 451)."""
    from skimage import data

    return data.chelsea()


@pytest.fixture(scope="session")
def resnet18():
    """torchvision ResNet-18 with random (seeded) weights, in eval mode."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    return resnet18().eval()
