"""The paper's LeNet (section 5): two 5x5 convolutions, then three fully connected layers.

Every layer is a named submodule so that a target string reads like the network:
`conv1:3`, `conv2:7@4,4`, `fc2:10`, `fc3:7` (pre-softmax logit of class 7).
The network takes NORMALIZED input (mean 0.1307, std 0.3081 applied outside it), so the
sampler works in the same space the classifier was trained in.
"""

from __future__ import annotations

import torch
from torch import nn

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
INPUT_SHAPE = (1, 28, 28)


class LeNet(nn.Module):
    """LeNet-5 as in the paper: conv1 (1->6, 5x5), pool1, conv2 (6->16, 5x5), pool2, flatten,
    fc1 (256->120), fc2 (120->84), fc3 (84->num_classes, pre-softmax logits).

    Input `[N, 1, 28, 28]` normalized; output `[N, num_classes]` logits.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5)  # -> 6x24x24
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)  # -> 6x12x12
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)  # -> 16x8x8
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)  # -> 16x4x4
        self.flatten = nn.Flatten()  # -> 256
        self.fc1 = nn.Linear(256, 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits `[N, num_classes]` for normalized images `x [N, 1, 28, 28]`."""
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.flatten(x)
        x = self.relu3(self.fc1(x))
        x = self.relu4(self.fc2(x))
        return self.fc3(x)
