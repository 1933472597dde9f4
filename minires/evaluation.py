"""Evaluating a network: evaluate() over a loader, and evaluate_checkpoint() behind `eval`.

evaluate() gives the mean loss and error rate of a model over a loader; train.py's Run calls it
after each epoch. evaluate_checkpoint() is `python -m minires eval`: the test error of a minires
run's checkpoint, or of a PyTorch one (torch_checkpoint.py reads those without PyTorch).
"""

from . import checkpoint, data, models, nn, torch_checkpoint
from .builders import build_model, load_data
from .checkpoint import CheckpointError
from .config import ConfigError, TrainConfig, check_config, config_from_dict
from .function import no_grad
from .ops.loss import cross_entropy

# akamaster/pytorch_resnet_cifar10 normalises with ImageNet's channel statistics (its
# trainer.py), so its checkpoints are evaluated with them rather than with CIFAR-10's.
TORCH_MEAN, TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def evaluate(model, loader):
    """(mean loss, error rate) of model over loader, in evaluation mode, without a graph."""
    was_training = model.training
    model.eval()
    total_loss, wrong, count = 0.0, 0, 0
    with no_grad():
        for x, y in loader:
            logits = model(x)
            total_loss += cross_entropy(logits, y).item() * len(y)
            wrong += int((logits.data.argmax(axis=1) != y).sum())
            count += len(y)
    model.train(was_training)
    return total_loss / count, wrong / count


def evaluate_checkpoint(path, data_path=None, device="cpu", model=None, shortcut=None):
    """(loss, error) on the test set of the model saved at path; data_path overrides its data.

    path is a minires checkpoint, or a PyTorch one (akamaster/pytorch_resnet_cifar10's files,
    or any state_dict with its names), which holds no config: it is taken to be a `model`
    (default resnet20) with `shortcut` (default A), and its images are normalised as akamaster's.
    """
    if checkpoint.file_kind(path) == "torch":
        state = torch_checkpoint.load_torch_checkpoint(path)
        weights = state.get("state_dict", state) if isinstance(state, dict) else state
        config = TrainConfig(model=model or "resnet20", shortcut=shortcut or "A", data=data_path)
        mean, std = TORCH_MEAN, TORCH_STD
        load, what = models.load_torch_state_dict, f"a {config.model}, shortcut {config.shortcut}"
    else:
        state = checkpoint.load_run(path)
        config = config_from_dict(state["config"], path)
        for name, value in [("model", model), ("shortcut", shortcut)]:
            if value is not None and value != getattr(config, name):
                raise ConfigError(f"--{name} {value}: {path} holds a run of --{name} "
                                  f"{getattr(config, name)}")
        weights, mean, std = state["model"], state["mean"], state["std"]
        load, what = nn.Module.load_state_dict, f"its {config.model}"
        config.data = data_path if data_path is not None else config.data
    check_config(config)
    net = build_model(config)
    try:
        load(net, weights)
    except (RuntimeError, ValueError, TypeError, AttributeError) as e:
        detail = " ".join(str(e).split())  # load_state_dict lists the keys on several lines
        detail = detail if len(detail) < 300 else detail[:300] + " ..."
        raise CheckpointError(f"{path}: its weights do not fit {what}: {detail}") from e
    net.to(device)
    config.val = False
    *_, x_test, y_test = load_data(config)
    loader = data.DataLoader(x_test, y_test, 500, mean=mean, std=std, device=device)
    return evaluate(net, loader)
