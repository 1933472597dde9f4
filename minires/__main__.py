"""The command line: `python -m minires train | eval | demo` (lesson 9 walks through a run).

    python -m minires train --model resnet20 --epochs 182 --device gpu --data cifar-10-python.tar.gz
    python -m minires eval --checkpoint runs/run/checkpoint.pkl
    python -m minires demo
"""

import argparse
import sys

from . import train as training


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m minires", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train a CIFAR ResNet or plain net")
    p.add_argument("--model", default="resnet20", help="resnetN or plainN, N = 6n+2 (default "
                   "resnet20)")
    p.add_argument("--shortcut", default="A", choices="ABC", help="He et al.'s option A, B or C")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iters", type=int, help="total iterations (the paper: 64000)")
    length.add_argument("--epochs", type=int, help="epochs instead of --iters")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--schedule", default="paper", choices=["paper", "cosine"],
                   help="paper: /10 at 50%% and 75%% of the run; cosine: cosine decay")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--data", help="CIFAR-10 tarball or folder, or 'sample' for the embedded "
                   "sample (default: $MINIRES_DATA or ~/.cache/minires, downloading if needed)")
    p.add_argument("--val", action="store_true", help="hold out 5k training images (the paper's "
                   "45k/5k split) and evaluate on them instead of the test set")
    p.add_argument("--out", default="runs/run", help="folder for checkpoint, metrics and plot")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = commands.add_parser("eval", help="test accuracy of a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", help="CIFAR-10 location (default: the one the run trained on)")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])

    p = commands.add_parser("demo", help="a two-minute CPU run on the embedded CIFAR-10 sample")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=15)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "train":
        config = training.TrainConfig(
            model=args.model, shortcut=args.shortcut, iters=args.iters, epochs=args.epochs,
            batch=args.batch, lr=args.lr, schedule=args.schedule, device=args.device,
            data=args.data, val=args.val, out=args.out, seed=args.seed)
        summary = training.train(config, resume=args.resume, progress=not args.no_progress)
        print(f"{summary['evaluated_on']} accuracy {summary['test_accuracy']:.4f} after "
              f"{summary['iterations']} iterations; plot: {summary['plot']}")
    elif args.command == "eval":
        loss, error = training.evaluate_checkpoint(args.checkpoint, data_path=args.data,
                                                   device=args.device)
        print(f"test accuracy {1 - error:.4f} (loss {loss:.4f})")
    elif args.command == "demo":
        config = training.TrainConfig(model="resnet8", epochs=args.epochs, batch=64, lr=0.05,
                                      schedule="cosine", data="sample", out=args.out)
        print("demo: ResNet-8 on the embedded CIFAR-10 sample (1,000 training and 500 test "
              "images), CPU")
        summary = training.train(config)
        print(f"test accuracy {summary['test_accuracy']:.4f} (chance: 0.10) after "
              f"{summary['iterations']} iterations; plot: {summary['plot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
