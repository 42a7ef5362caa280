"""The information plane of your own PyTorch model: a small CNN on MNIST-sized synthetic images.

    python examples/cnn_recorder.py [--epochs 8] [--runs-dir runs]

Then `ibtui replay runs/cnn-example-…` (it can be followed while this runs), or
`ibtui export runs/cnn-example-… --plane binning --out cnn.png`. Runs on a CPU in well under a minute.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import ibtui


def synthetic_digits(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n images 1×28×28 in [0, 1] of 10 classes: a smooth random prototype per class plus noise."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.nn.functional.avg_pool2d(torch.rand(10, 1, 28, 28, generator=g), 5, 1, 2)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = prototypes[labels] + 0.25 * torch.randn(n, 1, 28, 28, generator=g)
    return images.clamp(0, 1), labels


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 12, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.fc1 = nn.Linear(12 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.features(x).flatten(1))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--runs-dir", default="runs")
    args = parser.parse_args()
    torch.manual_seed(0)
    x_train, y_train = synthetic_digits(3000, seed=1)
    x_mi, y_mi = synthetic_digits(1000, seed=2)  # the samples the information is measured on
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with ibtui.Recorder(model, layers=["features.2", "features.5", "fc1", "fc2"], inputs=x_mi, labels=y_mi,
                        estimators={"binning": {"bin_size": 0.5}, "kde": {"noise_variance": 0.1}},
                        schedule="every", epochs=args.epochs, runs_dir=args.runs_dir, name="cnn-example",
                        description="examples/cnn_recorder.py: a small CNN on synthetic digits") as rec:
        for epoch in range(args.epochs):
            model.train()
            total = 0.0
            for start in range(0, len(x_train), 100):
                loss = nn.functional.cross_entropy(model(x_train[start:start + 100]), y_train[start:start + 100])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * 100
            with torch.no_grad():
                accuracy = float((model(x_mi).argmax(1) == y_mi).float().mean())
            rec.step(epoch + 1, train_loss=total / len(x_train), test_acc=accuracy)
    run = ibtui.load_run(rec.path)
    plane = run.plane("binning")
    print(f"{run.path}: {len(plane.epochs)} measured epochs; I(X;T) of fc1 from {plane.ixt[0, 2]:.2f} "
          f"to {plane.ixt[-1, 2]:.2f} bits, I(T;Y) from {plane.ity[0, 2]:.2f} to {plane.ity[-1, 2]:.2f} bits")


if __name__ == "__main__":
    main()
