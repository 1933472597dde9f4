"""The command line: `minires train | eval | demo` (lesson 9 walks through a run).

  minires train --model resnet20 --device gpu --data cifar-10-python.tar.gz
  minires train --out runs/run --resume                  # continue the run in runs/run
  minires train --out runs/run --resume --iters 128000   # extend it
  minires eval --checkpoint runs/run/checkpoint.npz
  minires eval --checkpoint resnet20-12fca82f.th --data cifar-10-python.tar.gz   # PyTorch's
  minires demo

`python -m minires` is the same command, without the console script. A mistake (an option
out of range, a missing or damaged file) gets one line, `minires: error: ...`, and exit status 2;
Ctrl-C during a run says where its checkpoint is and exits with 1. --debug (or MINIRES_DEBUG=1)
shows the full traceback instead.
"""

import argparse
import os
import sys

from . import __version__, evaluation
from . import train as training

# The train options that make a TrainConfig. They default to None here, so that with --resume
# the options the user left out come from the checkpoint (TrainConfig holds the real defaults,
# which the help shows).
CONFIG_OPTIONS = ("model", "shortcut", "iters", "epochs", "batch", "lr", "schedule", "warmup",
                  "device", "data", "val", "seed")
DEFAULT = training.TrainConfig()
EXAMPLES = "\n".join(["examples:", *__doc__.splitlines()[2:8]])


def program_name():
    """'minires' for the console script, 'python -m minires' for the module."""
    return "python -m minires" if sys.argv[0].endswith("__main__.py") else "minires"


def build_parser():
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog=program_name(), description=__doc__.splitlines()[0],
                                     epilog=EXAMPLES, formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"minires {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,eval,demo}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (or set MINIRES_DEBUG=1)")

    p = commands.add_parser(
        "train", parents=[common], formatter_class=formatter,
        help="train a CIFAR ResNet or plain net (He et al. 2015, sec. 4.2)",
        description="Train a CIFAR ResNet or plain net with He et al. 2015's recipe (sec. 4.2).",
        epilog="With --resume, an option left out takes the run's own value, not the default "
               "shown;\na longer --iters or --epochs extends the run (the README says how its "
               "schedule\ncontinues); any other changed option needs --change-config.")
    p.add_argument("--model", help=f"resnetN, plainN or preact_resnetN, N = 6n+2 "
                   f"(default: {DEFAULT.model})")
    p.add_argument("--shortcut", choices="ABC", help="He et al.'s option A (zero padding), B "
                   "(projections where the shape changes) or C (always projections) "
                   f"(default: {DEFAULT.shortcut})")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iters", type=int, help="total iterations (default: the paper's "
                        f"{training.PAPER_ITERATIONS}, rounded up to whole epochs)")
    length.add_argument("--epochs", type=int, help="the length in epochs instead of --iters "
                        "(default: none, --iters decides)")
    p.add_argument("--batch", type=int, help=f"images per iteration (default: {DEFAULT.batch})")
    p.add_argument("--lr", type=float,
                   help=f"learning rate at the start of the schedule (default: {DEFAULT.lr})")
    p.add_argument("--schedule", choices=["paper", "cosine"],
                   help="paper: /10 at 50%% and 75%% of the run; cosine: cosine decay to 0 "
                   f"(default: {DEFAULT.schedule})")
    p.add_argument("--warmup", action=argparse.BooleanOptionalAction,
                   help="paper schedule: start at lr/10 until the training error is below 80%%, "
                   "then lr, as He et al. did for ResNet-110 (default: on for depth 110 and "
                   "more, off below)")
    p.add_argument("--device", choices=["cpu", "gpu"],
                   help=f"where to compute (default: {DEFAULT.device})")
    p.add_argument("--data", help="CIFAR-10 tarball or folder, or 'sample' for the embedded "
                   "sample (default: $MINIRES_CIFAR10, else the archive in $MINIRES_DATA or "
                   "~/.cache/minires, downloaded if needed)")
    p.add_argument("--val", action="store_true", default=None, help="hold out 5k training "
                   "images (the paper's 45k/5k split) and evaluate on them (default: off, "
                   "evaluate on the 10k test images)")
    p.add_argument("--seed", type=int, help="seed of the initial weights, the shuffling and the "
                   f"augmentation (default: {DEFAULT.seed})")
    p.add_argument("--out", default=DEFAULT.out, help="folder for checkpoint, metrics and plot "
                   "(default: %(default)s)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in --out with "
                       "its own options, or extend it with a longer --iters/--epochs")
    again.add_argument("--overwrite", action="store_true",
                       help="start afresh in an --out that holds a run, replacing it")
    p.add_argument("--change-config", action="store_true", help="with --resume: continue with "
                   "the options given here as if the run had been started with them")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--cuda-graph", action="store_true", help="capture one training step as a "
                   "CUDA graph and replay it (GPU: no launch overhead; elsewhere the same "
                   "path runs without capture); the README says when it cannot be used")

    p = commands.add_parser(
        "eval", parents=[common], help="test accuracy of a checkpoint, minires's or PyTorch's",
        description="The test accuracy of a minires checkpoint.npz or of a PyTorch checkpoint "
                    "(.th/.pt/.pth), read without PyTorch and without running its code.")
    p.add_argument("--checkpoint", required=True, help="a minires checkpoint.npz, or a PyTorch "
                   ".th/.pt/.pth file (akamaster/pytorch_resnet_cifar10's, say)")
    p.add_argument("--data", help="CIFAR-10 location (default: the one the run trained on; "
                   "for a PyTorch file, as for train)")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                   help="where to compute (default: %(default)s)")
    p.add_argument("--model", help="for a PyTorch file, which holds no config: resnetN or "
                   "plainN (default: resnet20)")
    p.add_argument("--shortcut", choices="ABC", help="for a PyTorch file (default: A)")

    p = commands.add_parser("demo", parents=[common],
                            help="a two-minute CPU run on the embedded CIFAR-10 sample",
                            description="ResNet-8 on the 1,000 + 500 images embedded in "
                            "minires, on the CPU: no download, about two minutes.")
    p.add_argument("--out", default="runs/demo",
                   help="folder for checkpoint, metrics and plot (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=15, help="epochs (default: %(default)s)")
    return parser


def train_config(args):
    """The TrainConfig the train options ask for; with --resume, the run's own for the rest."""
    given = {name: getattr(args, name) for name in CONFIG_OPTIONS
             if getattr(args, name) is not None}
    base = {}
    if args.resume and os.path.exists(os.path.join(args.out, training.CHECKPOINT)):
        base = training.saved_config(args.out)
        if "iters" in given or "epochs" in given:  # a new length replaces the old, whichever
            base.update(iters=None, epochs=None, schedule_iters=None)
    return training.TrainConfig(**{**base, **given, "out": args.out})


def run(args):
    if args.command == "train":
        summary = training.train(train_config(args), resume=args.resume,
                                 overwrite=args.overwrite, change_config=args.change_config,
                                 progress=not args.no_progress, cuda_graph=args.cuda_graph)
        print(f"{summary['evaluated_on']} accuracy {summary['test_accuracy']:.4f} after "
              f"{summary['iterations']} iterations; plot: {summary['plot']}")
    elif args.command == "eval":
        loss, error = evaluation.evaluate_checkpoint(args.checkpoint, data_path=args.data,
                                                     device=args.device, model=args.model,
                                                     shortcut=args.shortcut)
        print(f"test accuracy {1 - error:.4f} (loss {loss:.4f})")
    elif args.command == "demo":
        config = training.TrainConfig(model="resnet8", epochs=args.epochs, batch=64, lr=0.05,
                                      schedule="cosine", data="sample", out=args.out)
        # Running the demo again replaces the last demo, but no other run kept in that folder.
        checkpoint = os.path.join(args.out, training.CHECKPOINT)
        # (config_differences, not ==: a demo saved before an option existed lacks its key.)
        overwrite = (os.path.exists(checkpoint)
                     and not training.config_differences(training.saved_config(args.out), config))
        print("demo: ResNet-8 on the embedded CIFAR-10 sample (1,000 training and 500 test "
              "images), CPU")
        summary = training.train(config, overwrite=overwrite)
        print(f"test accuracy {summary['test_accuracy']:.4f} (chance: 0.10) after "
              f"{summary['iterations']} iterations; plot: {summary['plot']}")
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("MINIRES_DEBUG", "0") not in ("", "0")
    try:
        return run(args)
    except KeyboardInterrupt as e:
        if debug:
            raise
        # A run's RunInterrupted says where its checkpoint is; elsewhere nothing was being saved.
        print(f"minires: {str(e) or 'interrupted'}", file=sys.stderr)
        return 1
    # minires's own errors are ValueErrors (ConfigError, CheckpointError, DatasetError),
    # RuntimeErrors (TrainingDiverged, a state_dict that does not fit) and FloatingPointErrors
    # (numbers that overflowed); a file is an OSError.
    except (ValueError, RuntimeError, FloatingPointError, OSError) as e:
        if debug:
            raise
        print("minires: error: " + " ".join(str(e).split()), file=sys.stderr)  # one line
        return 2


if __name__ == "__main__":
    sys.exit(main())
