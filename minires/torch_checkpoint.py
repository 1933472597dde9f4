"""PyTorch's checkpoint files (.th/.pt/.pth), read without PyTorch and without running code.

torch.save() writes pickles, and a pickle names functions to call while it loads.
load_torch_checkpoint() reads them with an unpickler that knows tensors, their storages and plain
containers and refuses every other name. checkpoint.py holds minires's own checkpoint format and
file_kind(), which tells the two apart. PyTorch's format is described in torch/serialization.py.
"""

import collections
import os
import pickle
import zipfile

import numpy as np

from .checkpoint import KINDS, CheckpointError, file_kind

# torch.<Name>Storage -> the NumPy dtype of its elements (bfloat16, which NumPy lacks, is read as
# its 16 bits and widened to float32 afterwards).
STORAGE_DTYPES = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "u2",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?", "ComplexFloatStorage": "c8",
    "ComplexDoubleStorage": "c16",
}
# Tuples, which a pickle cannot modify after they are built: only these can reach the code below.
StorageType = collections.namedtuple("StorageType", "name")
StorageRef = collections.namedtuple("StorageRef", "key offset type")  # offset: in elements
TensorRef = collections.namedtuple("TensorRef", "storage offset size stride")


def _rebuild_tensor(storage, offset, size, stride, *unused):
    """Stands in for torch._utils._rebuild_tensor(_v2): the storages are read after the pickle."""
    return TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data, *unused):
    """Stands in for torch._utils._rebuild_parameter: an nn.Parameter is its tensor."""
    return data


class _TorchUnpickler(pickle.Unpickler):
    """Builds a torch.save() pickle's containers, with TensorRef for tensors; refuses the rest."""

    ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }

    def __init__(self, file, path):
        super().__init__(file, encoding="utf-8")
        self.path = path
        self.storages = {}  # key -> (storage type name, number of elements), as declared

    def find_class(self, module, name):
        # torch.cuda.<Name>Storage: a file saved from a GPU model by PyTorch < 1.0
        if module in ("torch", "torch.cuda") and name in STORAGE_DTYPES:
            return StorageType(name)
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[module, name]
        raise CheckpointError(f"{self.path}: refusing to load {module}.{name}: a checkpoint "
                              "read without PyTorch may hold only tensors and plain containers")

    def persistent_load(self, pid):
        # ("storage", storage type, key, location, number of elements[, view, in old files])
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], StorageType)):
            raise CheckpointError(f"{self.path}: unexpected persistent id {pid!r}")
        key = str(pid[2])
        self.storages[key] = (pid[1].name, int(pid[4]))
        view = pid[5] if len(pid) == 6 else None
        # PyTorch < 1.0 pickled views of a storage as (view key, offset, size) beside it.
        return StorageRef(key, 0 if view is None else int(view[1]), pid[1].name)


def _dtype(type_name, order):
    return np.dtype(STORAGE_DTYPES[type_name]).newbyteorder(order)


def _tensor(ref, storages, path):
    """The NumPy view of a storage that TensorRef describes, after checking it lies inside."""
    data = storages[ref.storage.key]
    offset = ref.storage.offset + int(ref.offset)
    size, stride = tuple(int(n) for n in ref.size), tuple(int(s) for s in ref.stride)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))  # the last element it reads
    if (len(size) != len(stride) or min(size + stride + (offset,)) < 0
            or (0 not in size and last >= len(data))):
        raise CheckpointError(f"{path}: a tensor of size {size}, stride {stride}, offset {offset} "
                              f"does not fit in its storage of {len(data)} elements")
    item = data.itemsize
    # np.ndarray over the storage's buffer is a view, as a torch tensor is: tensors that share
    # a storage share memory here too.
    x = np.ndarray(size, data.dtype, buffer=data, offset=offset * item,
                   strides=tuple(s * item for s in stride))
    if ref.storage.type == "BFloat16Storage":  # bfloat16 is the high 16 bits of a float32
        return np.left_shift(x.astype(np.uint32), 16, dtype=np.uint32).view(np.float32)
    return x


def _resolve(value, storages, path):
    """value with every TensorRef replaced by its array (and a bare storage by its elements)."""
    if isinstance(value, TensorRef):
        return _tensor(value, storages, path)
    if isinstance(value, StorageRef):
        return storages[value.key][value.offset:]
    if isinstance(value, dict):
        return type(value)((key, _resolve(item, storages, path)) for key, item in value.items())
    if type(value) in (list, tuple):  # not a StorageType, which is a tuple too
        return type(value)(_resolve(item, storages, path) for item in value)
    return value


def _read_zip(path):
    """torch.save()'s format since PyTorch 1.6: <name>/data.pkl and <name>/data/<storage key>."""
    with zipfile.ZipFile(path) as archive:
        pickle_name = next(name for name in archive.namelist() if name.endswith("/data.pkl"))
        prefix = pickle_name[:-len("data.pkl")]
        order = "<"
        if prefix + "byteorder" in archive.namelist():
            order = ">" if archive.read(prefix + "byteorder") == b"big" else "<"
        with archive.open(pickle_name) as f:
            unpickler = _TorchUnpickler(f, path)
            value = unpickler.load()
        storages = {}
        for key, (type_name, numel) in unpickler.storages.items():
            dtype = _dtype(type_name, order)
            raw = archive.read(f"{prefix}data/{key}")
            if len(raw) != numel * dtype.itemsize:
                raise CheckpointError(f"{path}: storage {key} holds {len(raw)} bytes, its "
                                      f"{numel} elements need {numel * dtype.itemsize}")
            storages[key] = np.frombuffer(bytearray(raw), dtype)  # bytearray: writable
    return value, storages


def _read_legacy(path):
    """torch.save()'s format before PyTorch 1.6: five pickles, then each storage's elements."""
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        _TorchUnpickler(f, path).load()  # the magic number, which file_kind checked
        _TorchUnpickler(f, path).load()  # the protocol version (1001)
        info = _TorchUnpickler(f, path).load()  # {"little_endian": ..., "type_sizes": ...}
        order = "<" if not isinstance(info, dict) or info.get("little_endian", True) else ">"
        unpickler = _TorchUnpickler(f, path)
        value = unpickler.load()
        keys = _TorchUnpickler(f, path).load()  # the order in which the storages follow
        storages = {}
        for key in keys:  # each: its number of elements (int64), then the elements
            type_name, numel = unpickler.storages[key]
            dtype = _dtype(type_name, order)
            count = int.from_bytes(f.read(8), "little" if order == "<" else "big", signed=True)
            if count != numel or count < 0 or f.tell() + count * dtype.itemsize > file_size:
                raise CheckpointError(f"{path}: storage {key} is cut short or mislabelled")
            storages[key] = np.frombuffer(bytearray(f.read(numel * dtype.itemsize)), dtype)
    return value, storages


def load_torch_checkpoint(path):
    """A PyTorch checkpoint file (.th, .pt, .pth) as Python objects, tensors as NumPy arrays.

    Reads both of torch.save()'s formats (the zip archive, and the legacy one of older PyTorch
    and of the public akamaster/pytorch_resnet_cifar10 files) without importing torch. Only
    tensors, dicts, OrderedDicts, lists, tuples, numbers and strings are built; a file that asks
    for anything else (a whole pickled nn.Module, a function call) is refused with a
    CheckpointError and nothing of it runs. Each tensor becomes a view of its storage with the
    tensor's offset and strides, so tensors that shared a storage still share memory.
    An akamaster checkpoint gives {"epoch": ..., "best_prec1": ..., "state_dict": {...}}, whose
    state_dict models.load_torch_state_dict() loads.
    """
    kind = file_kind(path)
    if kind != "torch":
        raise CheckpointError(f"{path}: not a PyTorch checkpoint: {KINDS[kind]}")
    try:
        with open(path, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"
        value, storages = _read_zip(path) if is_zip else _read_legacy(path)
        return _resolve(value, storages, path)
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path}: truncated or damaged PyTorch checkpoint "
                              f"({type(e).__name__}: {e})") from e
